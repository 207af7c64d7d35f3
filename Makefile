# ferrolb — the commands people and CI use. `make help` lists them.

CARGO ?= cargo
CLUSTER_DIR ?= $(CURDIR)/.cache/cluster
CLUSTER = $(CARGO) run -q -p ferrolb-e2e --bin ferrolb-cluster -- --dir $(CLUSTER_DIR)
# kubectl built with the control plane (same pin as kube-apiserver).
KUBECTL = $(shell $(CLUSTER) bin)/kubectl --kubeconfig $(CLUSTER_DIR)/kubeconfig


.PHONY: release helm versions upgrade
.PHONY: help packages build bins image test unit e2e bench fuzz crds crds-check lint controlplane nodes cluster-up cluster-down real-up real-down demo demo-down demo-lite demo-lite-down

help:
	@echo "make demo          ferrolb on a real 3-node Kubernetes cluster here, installed with kubectl apply -k; FRR router, client; stays up"
	@echo "make demo-down     stop everything make demo started and remove it"
	@echo "make demo-lite     the same job with ferrolb as processes against a bare kube-apiserver (no kubelet)"
	@echo "make test          every test: unit tests, generated-CRD check, apiserver tests, the real-cluster tier and the upgrade lane on Kubernetes 1.37, then make versions"
	@echo "make versions      the older Kubernetes lanes: the apiserver tier on 1.35 and 1.36, the real-cluster tier on 1.35"
	@echo "make upgrade       just the upgrade lane: from an earlier commit and back under traffic, kubectl and Helm"
	@echo "make image         ferrolb's image (and the test images) as OCI archives in .cache/images, tag = the version"
	@echo "make release       dist/ferrolb-VERSION: ferrolb.yaml, the image archive, the Helm chart, the kubectl plugin + krew manifest, SHA256SUMS"
	@echo "make real-up       just the real cluster (3 nodes, images loaded); make real-down removes it"
	@echo "make e2e           the end-to-end tests only; TAGS=BGP,FAILOVER runs the files tagged so"
	@echo "make build         build every binary"
	@echo "make crds          regenerate the CRD YAML under config/crd/ from the Rust types"
	@echo "make lint          cargo fmt --check and clippy -D warnings"
	@echo "make bench         criterion benchmarks (allocation speed and memory)"
	@echo "make fuzz          fuzz address parsing, the admission handler, BGP and BFD input, FUZZ_SECONDS each (default 600)"
	@echo "make cluster-up    start etcd + kube-apiserver on loopback (kubeconfig in $(CLUSTER_DIR))"
	@echo "make cluster-down  stop them and remove $(CLUSTER_DIR)"

build:
	$(CARGO) build --workspace --all-targets

# The Debian packages the tests and the demo use, installed when missing.
packages:
	@bash e2e/scripts/need-packages.sh

# Builds kube-apiserver, etcd and kubectl from the Go module proxy once per pin.
controlplane:
	bash e2e/scripts/build-controlplane.sh >/dev/null

# kubelet, kube-proxy and kube-scheduler from the same pin.
nodes:
	bash e2e/scripts/build-nodes.sh >/dev/null

# The Helm CLI from the Go module proxy (helm.sh/helm/v4), once per pin.
helm:
	bash e2e/scripts/build-helm.sh >/dev/null

release: packages controlplane helm
	@bash e2e/scripts/release.sh

image: bins
	$(CARGO) run -q -p ferrolb-e2e --bin ferrolb-image

crds:
	$(CARGO) run -q -p ferrolb-api --bin crdgen -- config/crd

crds-check:
	$(CARGO) run -q -p ferrolb-api --bin crdgen -- --check config/crd

unit:
	$(CARGO) test --workspace --exclude ferrolb-e2e

# The e2e tests run the real binaries: build them first.
bins:
	$(CARGO) build --workspace --bins

e2e: packages controlplane nodes bins
	@CARGO=$(CARGO) TAGS=$(TAGS) bash e2e/scripts/e2e.sh

# Everything on 1.37 (the upgrade lane included), then the older minors.
test: packages controlplane nodes helm crds-check bins
	$(CARGO) test --workspace
	@CARGO=$(CARGO) bash e2e/scripts/versions.sh

# The older Kubernetes versions' lanes (the end of make test).
versions: packages bins
	@CARGO=$(CARGO) bash e2e/scripts/versions.sh

# The upgrade lane from an earlier commit (make test runs it too).
upgrade: packages controlplane nodes helm bins
	$(CARGO) test -p ferrolb-e2e --test upgrade -- --nocapture

bench:
	$(CARGO) bench -p ferrolb-operator --bench allocation

# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP lets the stable
# toolchain here accept them. Not part of `make test`.
FUZZ_SECONDS ?= 600
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in address admission bgp bfd; do \
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

real-up: packages controlplane nodes bins
	$(CARGO) run -q -p ferrolb-e2e --bin ferrolb-realcluster -- up --nodes 3

real-down:
	@$(CARGO) run -q -p ferrolb-e2e --bin ferrolb-realcluster -- down

demo: packages controlplane nodes bins
	@bash e2e/scripts/demo.sh

demo-down:
	@bash e2e/scripts/demo-down.sh

demo-lite: packages controlplane bins
	@CLUSTER_DIR=$(CLUSTER_DIR) bash e2e/scripts/demo-lite.sh

demo-lite-down:
	@CLUSTER_DIR=$(CLUSTER_DIR) bash e2e/scripts/demo-lite-down.sh
