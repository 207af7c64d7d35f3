# One image with the three binaries (ferrolb-operator, ferrolb-speaker,
# ferrolb-webhook), linked statically against musl and run from scratch.
# Build: docker build -t ghcr.io/ferrolb/ferrolb:dev .
# (Not built in this repository's CI: the development machines have no
# container engine.)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
      -p ferrolb-operator -p ferrolb-speaker -p ferrolb-webhook \
 && mkdir /out \
 && cp target/x86_64-unknown-linux-musl/release/ferrolb-operator \
       target/x86_64-unknown-linux-musl/release/ferrolb-speaker \
       target/x86_64-unknown-linux-musl/release/ferrolb-webhook /out/

FROM scratch
COPY --from=build /out/ /
# The operator and the webhook run as this user; the speaker's DaemonSet runs
# it as root with only NET_RAW and NET_ADMIN.
USER 65532:65532
ENTRYPOINT ["/ferrolb-operator"]
