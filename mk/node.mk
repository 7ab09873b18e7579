# --- End-to-end node runtime (owner: node area) ---------------------------------
# containerd, containerd-shim-runc-v2 and ctr built from containerd's Go module
# by our own module tools/containerd (its go.mod is the pin; CONTAINERD_VERSION
# at the top of the Makefile must name the same version, and containerd-check
# fails loudly when it does not). runc, the CNI plugins and the static busybox
# the job image is made of come from Debian at the upstream versions pinned in
# the Makefile; node-debs installs whichever is missing and checks what is
# there. Built once per version into the git-ignored tools dir, reused while
# present. Cold build: docs/operations.md ("Test binaries").
NODE_MK            := $(lastword $(MAKEFILE_LIST))
CONTAINERD_MODULE  := $(CURDIR)/tools/containerd
CONTAINERD_BIN_DIR := $(TOOLS_DIR)/containerd/$(CONTAINERD_VERSION)
CONTAINERD_TOOLS   := containerd containerd-shim-runc-v2 ctr
CONTAINERD_BINS    := $(addprefix $(TOOLS_BIN)/,$(CONTAINERD_TOOLS))
CONTAINERD_SOURCES := $(NODE_MK) $(CONTAINERD_MODULE)/go.mod $(CONTAINERD_MODULE)/go.sum \
  $(wildcard $(CONTAINERD_MODULE)/cmd/*/*.go)
# Static binaries (the shim is exec'd by containerd in any environment); the
# test node uses the overlayfs snapshotter only, so the others stay out.
CONTAINERD_TAGS    := no_btrfs no_devmapper no_zfs
CONTAINERD_LDFLAGS := -s -w -X github.com/containerd/containerd/v2/version.Version=$(CONTAINERD_VERSION)

# Debian package -> upstream version it must carry (the part of Debian's
# version before "+ds"/"-"); a different upstream version fails node-debs.
NODE_DEBS := runc=$(RUNC_VERSION) containernetworking-plugins=$(CNI_PLUGINS_VERSION) \
  busybox-static=$(BUSYBOX_VERSION)
# Where those packages put what the node uses.
RUNC_BIN    := /usr/sbin/runc
CNI_BIN_DIR := /usr/lib/cni
BUSYBOX_BIN := /bin/busybox

.PHONY: node-bins node-debs containerd-check

node-bins: k8s-bins $(CONTAINERD_BINS) node-debs ## build/install everything the end-to-end node runs

containerd-check: ## check that tools/containerd/go.mod pins CONTAINERD_VERSION
	@grep -qE '^require github\.com/containerd/containerd/v2 $(CONTAINERD_VERSION)$$' $(CONTAINERD_MODULE)/go.mod || \
	  { echo "containerd-check: $(CONTAINERD_MODULE)/go.mod does not require containerd $(CONTAINERD_VERSION) (Makefile CONTAINERD_VERSION)" >&2; exit 1; }

# apt-get only for what is missing, then every package's version is checked.
# iproute2 (the fixture makes its bridge with `ip`) is needed at any version.
node-debs: ## install runc, CNI plugins, busybox-static from Debian and check their versions
	@set -e; missing=; for p in $(NODE_DEBS); do \
	  dpkg-query -W -f='$${Status}' $${p%%=*} 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $${p%%=*}"; \
	done; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi; \
	for p in $(NODE_DEBS); do \
	  name=$${p%%=*}; want=$${p#*=}; have=$$(dpkg-query -W -f='$${Version}' $$name); \
	  up=$${have#*:}; up=$${up%%+*}; up=$${up%%-*}; \
	  [ "$$up" = "$$want" ] || { echo "node-debs: $$name is $$have, upstream $$up; the Makefile pins $$want" >&2; exit 1; }; \
	done; \
	for f in $(RUNC_BIN) $(CNI_BIN_DIR)/bridge $(CNI_BIN_DIR)/host-local $(CNI_BIN_DIR)/loopback $(BUSYBOX_BIN); do \
	  [ -x $$f ] || { echo "node-debs: $$f missing after install" >&2; exit 1; }; \
	done

# -mod=readonly: the committed go.sum must already be complete.
$(CONTAINERD_BIN_DIR)/.built: $(CONTAINERD_SOURCES) | containerd-check
	mkdir -p $(@D)
	cd $(CONTAINERD_MODULE) && CGO_ENABLED=0 GOFLAGS='-mod=readonly -buildvcs=false' nice go build \
	  -trimpath -tags '$(CONTAINERD_TAGS)' -ldflags='$(CONTAINERD_LDFLAGS)' -o $(@D)/ \
	  $(addprefix ./cmd/,$(CONTAINERD_TOOLS))
	t=$$(date +%s); touch -d @$$t $(addprefix $(@D)/,$(CONTAINERD_TOOLS)) $@

$(CONTAINERD_BINS): $(TOOLS_BIN)/%: $(CONTAINERD_BIN_DIR)/.built
	mkdir -p $(@D)
	ln -sfn $(CONTAINERD_BIN_DIR)/$* $@

# The end-to-end tests run a real node: build it before pytest.
pytest: node-bins
