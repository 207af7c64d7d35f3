# ferrolb — the commands people and CI use. `make help` lists them.

CARGO ?= cargo
CLUSTER_DIR ?= $(CURDIR)/.cache/cluster
CLUSTER = $(CARGO) run -q -p ferrolb-e2e --bin ferrolb-cluster -- --dir $(CLUSTER_DIR)
# kubectl built with the control plane (same pin as kube-apiserver).
KUBECTL = $(shell $(CLUSTER) bin)/kubectl --kubeconfig $(CLUSTER_DIR)/kubeconfig

.PHONY: help build bins test unit e2e bench fuzz crds crds-check lint controlplane cluster-up cluster-down demo demo-down

help:
	@echo "make demo          the whole job locally: control plane, nodes, FRR router, client, ferrolb; stays up"
	@echo "make demo-down     stop everything make demo started"
	@echo "make test          every test: unit tests, generated-CRD check, tests on a real kube-apiserver"
	@echo "make e2e           the end-to-end tests only; TAGS=BGP,FAILOVER runs the files tagged so"
	@echo "make build         build every binary"
	@echo "make crds          regenerate the CRD YAML under config/crd/ from the Rust types"
	@echo "make lint          cargo fmt --check and clippy -D warnings"
	@echo "make bench         criterion benchmarks (allocation speed and memory)"
	@echo "make fuzz          fuzz address parsing, the admission handler and BGP input, FUZZ_SECONDS each (default 600)"
	@echo "make cluster-up    start etcd + kube-apiserver on loopback (kubeconfig in $(CLUSTER_DIR))"
	@echo "make cluster-down  stop them and remove $(CLUSTER_DIR)"

build:
	$(CARGO) build --workspace --all-targets

# Builds kube-apiserver, etcd and kubectl from the Go module proxy once per pin.
controlplane:
	bash e2e/scripts/build-controlplane.sh >/dev/null

crds:
	$(CARGO) run -q -p ferrolb-api --bin crdgen -- config/crd

crds-check:
	$(CARGO) run -q -p ferrolb-api --bin crdgen -- --check config/crd

unit:
	$(CARGO) test --workspace --exclude ferrolb-e2e

# The e2e tests run the real binaries: build them first.
bins:
	$(CARGO) build --workspace --bins

e2e: controlplane bins
	@CARGO=$(CARGO) TAGS=$(TAGS) bash e2e/scripts/e2e.sh

test: controlplane crds-check bins
	$(CARGO) test --workspace

bench:
	$(CARGO) bench -p ferrolb-operator --bench allocation

# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP lets the stable
# toolchain here accept them. Not part of `make test`.
FUZZ_SECONDS ?= 600
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in address admission bgp; do \
		mkdir -p corpus/$$target; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target corpus/$$target seeds/$$target --sanitizer none \
			-- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

cluster-up: controlplane
	@$(CLUSTER) up

cluster-down:
	@$(CLUSTER) down

demo: controlplane bins
	@CLUSTER_DIR=$(CLUSTER_DIR) bash e2e/scripts/demo.sh

demo-down:
	@CLUSTER_DIR=$(CLUSTER_DIR) bash e2e/scripts/demo-down.sh
