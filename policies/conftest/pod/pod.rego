# METADATA
# title: Job pods
# description: |
#   What every pod the launcher creates for a job must satisfy: Pod Security
#   "restricted", plus our own rules - the pod runs as the labelled owner and
#   never as root, its groups are exactly the ones OPA granted
#   (supplementalGroupsPolicy Strict), no service-account token, NFS only
#   through admin-provisioned PVCs. Run it with
#   conftest test --policy policies/conftest --namespace conftest.pod pod.yaml
package conftest.pod

import data.conftest.lib

# METADATA
# description: Every reason the manifest is not an acceptable job pod.
# scope: document
deny contains sprintf("kind %v: a job must be a Pod or a Job", [object.get(input, "kind", null)]) if {
	not input.kind in {"Pod", "Job"}
}

deny contains msg if {
	some msg in lib.restricted
}

deny contains "pod: automountServiceAccountToken must be false" if {
	object.get(lib.spec, "automountServiceAccountToken", null) != false
}

deny contains "pod: securityContext.supplementalGroupsPolicy must be Strict" if {
	object.get(lib.spec, ["securityContext", "supplementalGroupsPolicy"], null) != "Strict"
}

deny contains sprintf("pod: runAsUser %v must equal the tokensvc.io/owner-uid label %v", [uid, label]) if {
	uid := object.get(lib.spec, ["securityContext", "runAsUser"], null)
	label := object.get(_metadata, ["labels", "tokensvc.io/owner-uid"], null)
	format_int(uid, 10) != label
}

deny contains sprintf("pod: label %s is required", [name]) if {
	some name in ["tokensvc.io/owner-uid", "tokensvc.io/project", "tokensvc.io/token-id"]
	not _metadata.labels[name]
}

deny contains sprintf("volume %q: a persistentVolumeClaim volume must name its claim", [v.name]) if {
	some v in lib.spec.volumes
	v.persistentVolumeClaim
	not v.persistentVolumeClaim.claimName
}

deny contains sprintf("container %q: runAsUser %v differs from the pod's %v", [c.name, mine, pods]) if {
	some c in lib.containers
	mine := c.securityContext.runAsUser
	pods := lib.spec.securityContext.runAsUser
	mine != pods
}

_metadata := input.metadata if input.kind == "Pod"

_metadata := input.spec.template.metadata if input.kind == "Job"
