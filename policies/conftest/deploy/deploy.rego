# METADATA
# title: Deployment manifests
# description: |
#   What the manifests under deploy/ must satisfy (run over the kustomize
#   output or the raw files):
#   conftest test --policy policies/conftest --namespace conftest.deploy deploy/...
#   Workloads meet Pod Security "restricted" with read-only root filesystems,
#   resource limits and pinned images; secrets (the token key ring) are
#   mounted read-only with mode 0400; OPA listens on localhost only.
package conftest.deploy

import data.conftest.lib

# METADATA
# description: File mode every secret volume must use (0400 = 256).
secret_mode := 256

# METADATA
# description: Every reason the manifest breaks our deployment rules.
# scope: document
deny contains msg if {
	input.kind in lib.workload_kinds
	some msg in lib.restricted
}

deny contains sprintf("%s %s: Secret volume %q must set defaultMode 0400 (256)", [input.kind, _name, v.name]) if {
	some v in lib.spec.volumes
	v.secret
	object.get(v.secret, "defaultMode", null) != secret_mode
}

deny contains sprintf("container %q: Secret volume %q must be mounted readOnly", [c.name, m.name]) if {
	some c in lib.containers
	some m in c.volumeMounts
	m.name in _secret_volumes
	object.get(m, "readOnly", false) != true
}

deny contains sprintf("container %q: resources.limits.%s must be set", [c.name, r]) if {
	input.kind in lib.workload_kinds
	some c in lib.containers
	some r in ["cpu", "memory"]
	not c.resources.limits[r]
}

deny contains sprintf("container %q: readOnlyRootFilesystem must be true", [c.name]) if {
	input.kind in lib.workload_kinds
	some c in lib.containers
	object.get(c, ["securityContext", "readOnlyRootFilesystem"], false) != true
}

deny contains sprintf("container %q: image %q must be pinned (a tag but latest, or a digest)", [c.name, c.image]) if {
	some c in lib.containers
	not _pinned(c.image)
}

deny contains sprintf("container %q: OPA must be started with --addr bound to 127.0.0.1 or localhost", [c.name]) if {
	some c in lib.containers
	_is_opa(c)
	not _localhost_only(_args(c))
}

deny contains sprintf("container %q: OPA needs --config-file (bundle signing, masked decision logs)", [c.name]) if {
	some c in lib.containers
	_is_opa(c)
	not _has_flag(_args(c), "--config-file")
}

_name := object.get(input, ["metadata", "name"], "?")

_secret_volumes contains v.name if {
	some v in lib.spec.volumes
	v.secret
}

_is_opa(c) if contains(object.get(c, "image", ""), "openpolicyagent/opa")

_is_opa(c) if c.name == "opa"

_args(c) := array.concat(object.get(c, "command", []), object.get(c, "args", []))

# Every --addr given is a loopback address, and at least one is given.
_localhost_only(args) if {
	addrs := _addrs(args)
	count(addrs) > 0
	every a in addrs {
		regex.match(`^(127\.0\.0\.1|localhost|\[::1\]):[0-9]+$`, a)
	}
}

_addrs(args) := array.concat(
	[substring(a, 7, -1) | some a in args; startswith(a, "--addr=")],
	[args[i + 1] | some i, a in args; a in {"--addr", "-a"}],
)

_has_flag(args, flag) if {
	some a in args
	startswith(a, flag)
}

_pinned(image) if contains(image, "@sha256:")

_pinned(image) if {
	not contains(image, "@")
	parts := split(image, "/")
	tag := split(parts[count(parts) - 1], ":")
	count(tag) == 2
	tag[1] != "latest"
}
