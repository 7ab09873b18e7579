# METADATA
# title: Kubernetes helpers for the conftest rules
# description: |
#   The pod spec and containers of the manifest under test (any workload
#   kind), the effective security context of a container (its own setting,
#   else the pod's), and the Pod Security "restricted" checks shared by job
#   pods and deploy/ workloads. Every message names the offending object.
package conftest.lib

# METADATA
# description: The workload kinds whose pod template the rules inspect.
workload_kinds := {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}

# METADATA
# description: The pod spec of the manifest under test (undefined for kinds without one).
# scope: document
spec := input.spec if input.kind == "Pod"

spec := input.spec.jobTemplate.spec.template.spec if input.kind == "CronJob"

spec := input.spec.template.spec if input.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

# METADATA
# description: Every container of the pod spec (init and ephemeral too).
containers := array.concat(
	array.concat(object.get(spec, "initContainers", []), object.get(spec, "containers", [])),
	object.get(spec, "ephemeralContainers", []),
)

# METADATA
# description: The securityContext value at path (an array) of container c, else the pod's, else null.
effective(c, path) := object.get(
	c, array.concat(["securityContext"], path),
	object.get(spec, array.concat(["securityContext"], path), null),
)

# METADATA
# description: Volume types Pod Security "restricted" allows.
restricted_volume_types := {
	"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
	"persistentVolumeClaim", "projected", "secret",
}

# METADATA
# description: Sysctls Pod Security "baseline" (and so "restricted") allows.
safe_sysctls := {
	"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes",
}

# METADATA
# description: Pod Security "restricted" violations of the pod spec.
# scope: document
restricted contains sprintf("pod: %s must not be true", [field]) if {
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	spec[field] == true
}

restricted contains "pod: supplementalGroups must not contain 0" if 0 in spec.securityContext.supplementalGroups

restricted contains "pod: fsGroup must not be 0" if spec.securityContext.fsGroup == 0

restricted contains sprintf("pod: sysctl %q is not in the safe set", [s.name]) if {
	some s in spec.securityContext.sysctls
	not s.name in safe_sysctls
}

restricted contains sprintf("volume %q: hostPath volumes are not allowed", [v.name]) if {
	some v in spec.volumes
	v.hostPath
}

restricted contains sprintf(
	"volume %q: inline nfs volumes are not allowed; mount NFS through a PersistentVolumeClaim",
	[v.name],
) if {
	some v in spec.volumes
	v.nfs
}

restricted contains sprintf("volume %q: %s volumes are not allowed by Pod Security restricted", [v.name, kind]) if {
	some v in spec.volumes
	some kind, _ in object.remove(v, {"name"})
	not kind in restricted_volume_types
	not kind in {"hostPath", "nfs"}
}

restricted contains sprintf("container %q: runAsNonRoot must be true", [c.name]) if {
	some c in containers
	effective(c, ["runAsNonRoot"]) != true
}

restricted contains sprintf("container %q: %s must be set and not 0", [c.name, field]) if {
	some c in containers
	some field in ["runAsUser", "runAsGroup"]
	not _positive(effective(c, [field]))
}

restricted contains sprintf("container %q: allowPrivilegeEscalation must be false", [c.name]) if {
	some c in containers
	object.get(c, ["securityContext", "allowPrivilegeEscalation"], null) != false
}

restricted contains sprintf("container %q: privileged must not be true", [c.name]) if {
	some c in containers
	c.securityContext.privileged == true
}

restricted contains sprintf("container %q: capabilities must drop ALL", [c.name]) if {
	some c in containers
	not "ALL" in object.get(c, ["securityContext", "capabilities", "drop"], [])
}

restricted contains sprintf("container %q: capabilities must not add %v", [c.name, added]) if {
	some c in containers
	added := c.securityContext.capabilities.add
	count(added) > 0
}

restricted contains sprintf("container %q: seccompProfile.type must be RuntimeDefault", [c.name]) if {
	some c in containers
	effective(c, ["seccompProfile", "type"]) != "RuntimeDefault"
}

restricted contains sprintf("container %q: procMount must be Default", [c.name]) if {
	some c in containers
	c.securityContext.procMount != "Default"
}

restricted contains sprintf("container %q: hostPort must not be set", [c.name]) if {
	some c in containers
	some p in c.ports
	p.hostPort
}

_positive(id) if {
	is_number(id)
	id > 0
}
