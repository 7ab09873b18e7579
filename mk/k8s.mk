# --- Kubernetes test binaries (owner: k8s area) --------------------------------
# kube-apiserver, etcd and kustomize for the integration tests, and kubelet,
# kube-scheduler and kube-controller-manager for the end-to-end node, built
# from Go modules by our own module tools/k8s (its go.mod is the pin; K8S_VERSION and
# ETCD_VERSION at the top of the Makefile must name the same versions, and
# k8s-check fails loudly when they do not). Built once per version pair into
# the git-ignored tools dir, reused while present. Cold build: docs/operations.md
# ("Test binaries").
K8S_MK      := $(lastword $(MAKEFILE_LIST))
K8S_MODULE  := $(CURDIR)/tools/k8s
# Staging modules are published as v0.<minor>.<patch> for release v1.<minor>.<patch>.
K8S_STAGING := v0$(patsubst v1%,%,$(K8S_VERSION))
K8S_BIN_DIR := $(TOOLS_DIR)/k8s/$(K8S_VERSION)+etcd$(ETCD_VERSION)
# What upstream's hack/lib/version.sh stamps, so /version tells the truth.
K8S_VERSION_PKG := k8s.io/component-base/version
K8S_LDFLAGS := -s -w -X $(K8S_VERSION_PKG).gitVersion=$(K8S_VERSION) \
  -X $(K8S_VERSION_PKG).gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION:v%=%))) \
  -X $(K8S_VERSION_PKG).gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION))) \
  -X $(K8S_VERSION_PKG).gitTreeState=clean
K8S_SOURCES := $(K8S_MK) $(K8S_MODULE)/go.mod $(K8S_MODULE)/go.sum $(wildcard $(K8S_MODULE)/cmd/*/*.go)
K8S_NODE_TOOLS := kubelet kube-scheduler kube-controller-manager
K8S_TOOLS   := kube-apiserver etcd kustomize $(K8S_NODE_TOOLS)
K8S_BINS    := $(addprefix $(TOOLS_BIN)/,$(K8S_TOOLS))

.PHONY: k8s-bins k8s-check

k8s-bins: $(K8S_BINS) ## build the Kubernetes test binaries and kustomize (once per version)

# Read go.mod as text: no network, no module download, just a loud mismatch.
k8s-check: ## check that tools/k8s/go.mod pins K8S_VERSION and ETCD_VERSION
	@set -e; mod=$(K8S_MODULE)/go.mod; \
	grep -qE '^[[:space:]]*k8s\.io/kubernetes $(K8S_VERSION)$$' $$mod || \
	  { echo "k8s-check: $$mod does not require k8s.io/kubernetes $(K8S_VERSION) (Makefile K8S_VERSION)" >&2; exit 1; }; \
	grep -qE '^[[:space:]]*go\.etcd\.io/etcd/server/v3 $(ETCD_VERSION)$$' $$mod || \
	  { echo "k8s-check: $$mod does not require go.etcd.io/etcd/server/v3 $(ETCD_VERSION) (Makefile ETCD_VERSION)" >&2; exit 1; }; \
	bad=$$(grep -E '=> k8s\.io/' $$mod | grep -vE ' $(K8S_STAGING)$$' || true); \
	[ -z "$$bad" ] || { echo "k8s-check: staging replaces not at $(K8S_STAGING):" >&2; echo "$$bad" >&2; exit 1; }

# One `go build` for all of them (they share most packages). -mod=readonly: the
# committed go.sum must already be complete, so a drifting graph fails here.
# nice: the build is long on a 2-core machine and shouldn't starve the tests.
$(K8S_BIN_DIR)/.built: $(K8S_SOURCES) | k8s-check
	mkdir -p $(@D)
	cd $(K8S_MODULE) && GOFLAGS='-mod=readonly -buildvcs=false' nice go build \
	  -trimpath -ldflags='$(K8S_LDFLAGS)' -o $(@D)/ \
	  ./cmd/kube-apiserver ./cmd/etcd $(addprefix ./cmd/,$(K8S_NODE_TOOLS)) \
	  sigs.k8s.io/kustomize/kustomize/v5
	# One timestamp for all, so the symlinks below are not remade every run.
	t=$$(date +%s); touch -d @$$t $(addprefix $(@D)/,$(K8S_TOOLS)) $@

$(K8S_BINS): $(TOOLS_BIN)/%: $(K8S_BIN_DIR)/.built
	mkdir -p $(@D)
	ln -sfn $(K8S_BIN_DIR)/$* $@

# The integration tests start a real API server; build it before pytest.
pytest: k8s-bins
