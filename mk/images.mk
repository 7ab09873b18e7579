# --- Images without a registry (owner: node area) ---------------------------------
# OCI image archives written by deploy/images/ociimage.py from the JSON specs
# beside it: reproducible (sorted entries, one fixed mtime), so the same spec
# and the same Debian busybox give the same digest on every machine. The end-
# to-end fixture imports them into its containerd; a site with a registry
# pushes them with any OCI tool (docs/operations.md, "Images").
IMAGES_DIR   := $(CURDIR)/build/images
IMAGE_SPECS  := $(CURDIR)/deploy/images
IMAGE_NAMES  := job job-extra-group pause opa server
IMAGE_TARS   := $(addprefix $(IMAGES_DIR)/,$(addsuffix .tar,$(IMAGE_NAMES)))
# Fixed mtime for every entry: the last commit's time would change the bytes
# with every commit, so it is a constant instead.
IMAGES_EPOCH := 0

.PHONY: images

images: $(IMAGE_TARS) ## build the OCI image archives (build/images/*.tar)

# The OPA image's binary: the pinned OPA built again without cgo, so it runs
# in an image with no C library (the one in .tools/bin links glibc). Same
# scratch-module `go get` as the Makefile's go_tool, for the same reason.
OPA_STATIC := $(TOOLS_DIR)/opa-static/$(OPA_VERSION)/opa
$(OPA_STATIC):
	mkdir -p $(@D)
	d=$$(mktemp -d) && cd $$d && go mod init tools-build >/dev/null 2>&1 && \
	  go get github.com/open-policy-agent/opa@$(OPA_VERSION) && \
	  CGO_ENABLED=0 GOBIN=$(@D) nice go install -trimpath -ldflags='-s -w' \
	  github.com/open-policy-agent/opa; rc=$$?; rm -rf $$d; exit $$rc

$(TOOLS_BIN)/opa-static: $(OPA_STATIC)
	mkdir -p $(@D)
	ln -sfn $< $@

# job-extra-group extends job.json, so every image depends on every spec and
# on every file the specs read.
$(IMAGES_DIR)/%.tar: $(IMAGE_SPECS)/%.json $(wildcard $(IMAGE_SPECS)/*.json $(IMAGE_SPECS)/*/*) \
  $(IMAGE_SPECS)/ociimage.py | node-debs
	mkdir -p $(@D)
	$(PYTHON) $(IMAGE_SPECS)/ociimage.py --epoch $(IMAGES_EPOCH) $(IMAGE_SOURCES) $< $@

$(IMAGES_DIR)/opa.tar: $(OPA_STATIC)
$(IMAGES_DIR)/opa.tar: IMAGE_SOURCES = --src opa=$(OPA_STATIC)

# The server image's root: Debian's Python 3.11 and the few libraries its
# standard modules and our wheels load, unpacked from the .debs (no package
# manager, no shell in the image), and tokensvc with its pinned runtime
# dependencies from PyPI below /usr/local (on Debian Python's sys.path). The
# venv's interpreter is the same Debian Python, so the wheels fit.
SERVER_DEBS   := python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 \
  libexpat1 zlib1g libssl3 libffi8 libbz2-1.0 liblzma5 libuuid1 libcrypt1 libgcc-s1
SERVER_ROOTFS := $(CURDIR)/build/server-rootfs
$(SERVER_ROOTFS)/.built: pyproject.toml $(shell find tokensvc -name '*.py') $(lastword $(MAKEFILE_LIST)) \
  | $(VENV)/.installed
	rm -rf $(SERVER_ROOTFS) && mkdir -p $(SERVER_ROOTFS)/debs $(SERVER_ROOTFS)/root
	cd $(SERVER_ROOTFS)/debs && { apt-get download $(SERVER_DEBS) 2>/dev/null || \
	  { apt-get update -qq && apt-get download $(SERVER_DEBS); }; }
	for deb in $(SERVER_ROOTFS)/debs/*.deb; do dpkg-deb -x $$deb $(SERVER_ROOTFS)/root; done
	$(VPY) -m pip install --quiet --no-compile --no-warn-script-location \
	  --target $(SERVER_ROOTFS)/root/usr/local/lib/python3.11/dist-packages '$(CURDIR)[cluster]'
	# Where pip found each package and the scripts it wrote for this machine's
	# venv are no part of the image; each RECORD drops them too, so the root
	# is the same wherever it is built.
	find $(SERVER_ROOTFS)/root -name direct_url.json -delete
	rm -rf $(SERVER_ROOTFS)/root/usr/local/lib/python3.11/dist-packages/bin
	sed -i -e '/^\.\.\/\.\.\/bin\//d' -e '/\/direct_url\.json,/d' \
	  $(SERVER_ROOTFS)/root/usr/local/lib/python3.11/dist-packages/*.dist-info/RECORD
	touch $@

$(IMAGES_DIR)/server.tar: $(SERVER_ROOTFS)/.built
$(IMAGES_DIR)/server.tar: IMAGE_SOURCES = --src rootfs=$(SERVER_ROOTFS)/root

# The end-to-end node imports these; build them before pytest.
pytest: images
