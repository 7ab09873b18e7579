# Submit: a job is charged to one project group the submitter is in; its level
# there bounds systems and priority, and every requested mount must be granted
# by the rule of its export that decides it.
package wsc.authz

import data.wsc.paths
import data.wsc.privilege
import data.wsc.storage

# A member of the project whose level there may submit jobs.
_permitted if {
	input.action == "submit"
	_may_submit
}

_outputs := {
	"run_as": {"uid": input.identity.uid, "gid": _project.gid},
	"supplemental_groups": sort(_supplemental_groups),
	"mounts": [_granted_mount[i] | some i, _ in _request_mounts],
	"priority": _priority,
} if {
	input.action == "submit"
}

# --- the project -------------------------------------------------------------------

# The caller's membership in the project group; undefined when the caller is
# not in it (or the request names none).
_project := _membership[input.request.project]

_project_rights := privilege.rights(_project)

_may_submit if _project_rights.submit

default _systems := 1

_systems := input.request.resources.systems

# The priority asked for, else (submit only) the project level's default.
default _priority := null

_priority := input.request.priority if _has_priority

_priority := _project_rights.default_priority if {
	input.action == "submit"
	not _has_priority
}

_has_priority if "priority" in object.keys(input.request)

# --- mounts ------------------------------------------------------------------------

_modes := {"ro", "rw"}

default _request_mounts := []

_request_mounts := input.request.mounts

# The clean path of each well-formed requested mount ({path, mode}, mode "ro"
# or "rw", a path paths.problem accepts), by index.
_mount_path[i] := paths.normalise(m.path) if {
	some i, m in _request_mounts
	m.mode in _modes
	not paths.problem(m.path)
}

# What decides each well-formed mount (storage.lookup), by index; undefined
# for one outside every export.
_mount_target[i] := storage.lookup(path) if some i, path in _mount_path

# How the rule deciding each mount grants it (_grant), by index; undefined for
# a mount no rule grants, and for every mount of a caller whose uid is not a
# number (owner rules match the uid, memberships need it).
_mount_grant[i] := _grant(target, _request_mounts[i].mode) if {
	_caller_has_uid
	some i, target in _mount_target
}

# The mount the launcher applies for each granted request mount, by index.
_granted_mount[i] := {
	"path": _mount_path[i],
	"export": target.export.name,
	"pvc": target.export.pvc,
	"sub_path": target.sub_path,
	"read_only": _request_mounts[i].mode == "ro",
} if {
	some i, _ in _mount_grant
	target := _mount_target[i]
}

# How the rule deciding target grants mode, first match wins:
#   project - the rule grants the project group: the job has its gid anyway;
#   owner   - the rule's owner clause grants the caller's own directory (a
#             home directory needs no group);
#   group   - the rule grants another group the caller is in: the lowest such
#             gid, which the job then also needs. Only for a request that names
#             a project: the job's groups start from it.
# gid is the supplementary group the grant needs, absent for owner grants.
_grant(target, mode) := {"by": "project", "group": _project.group, "gid": _project.gid} if {
	storage.covers(target.rule.groups[_project.group], mode)
} else := {"by": "owner", "owner": owner} if {
	owner := storage.owner_grant(target, mode, input.identity)
} else := {"by": "group", "group": lowest.group, "gid": lowest.gid} if {
	_names_project
	members := [m |
		some name in storage.grantees(target.rule, mode)
		m := _membership[name]
	]
	some lowest in members
	lowest.gid == min({m.gid | some m in members})
}

_names_project if "project" in object.keys(input.request)

# The job's supplementary groups: the project's gid (null when the caller is
# not in the project) and the gid each group-granted mount needs.
default _project_gid := null

_project_gid := _project.gid

_supplemental_groups := {_project_gid} | {grant.gid | some grant in _mount_grant}

# Why each requested mount that no rule grants is refused, by index.
_mount_refusal[i] := _malformed(m) if {
	some i, m in _request_mounts
	not _mount_path[i]
}

_mount_refusal[i] := sprintf("mount %q: outside every NFS export", [path]) if {
	some i, path in _mount_path
	not _mount_target[i]
}

_mount_refusal[i] := sprintf("mount %q: no rule of export %q covers it", [_mount_path[i], target.export.name]) if {
	some i, target in _mount_target
	target.rule == null
}

_mount_refusal[i] := msg if {
	some i, target in _mount_target
	target.rule != null
	not _mount_grant[i]
	mode := _request_mounts[i].mode
	msg := sprintf(
		"mount %q (%s): rule %q of export %q grants you no %s access",
		[_mount_path[i], mode, target.rule_path, target.export.name, mode],
	)
}

# What is wrong with a requested mount that has no clean path.
_malformed(m) := sprintf("mount %v: must be {path, mode}", [m]) if not is_object(m)

else := sprintf("mount %v: path is missing", [m]) if not "path" in object.keys(m)

else := sprintf("mount %v: path is not a string", [m.path]) if not is_string(m.path)

else := sprintf("mount %q: %s", [m.path, problem]) if {
	problem := paths.problem(m.path)
} else := sprintf("mount %q: mode must be \"ro\" or \"rw\"", [m.path])

# --- denials -----------------------------------------------------------------------

deny contains msg if {
	input.action == "submit"
	some msg in _submit_denials
}

_submit_denials contains "request.project: must name one of your groups" if {
	not is_string(object.get(input, ["request", "project"], null))
}

_submit_denials contains sprintf("project %q: not one of your groups", [input.request.project]) if {
	is_string(input.request.project)
	not _project
}

_submit_denials contains sprintf("project %q: level %q may not submit jobs", [_project.group, _project.level]) if {
	not _may_submit
}

_submit_denials contains "request.resources.systems: must be an integer >= 1" if not _positive(_systems)

_submit_denials contains msg if {
	_may_submit
	_too_many_systems
	msg := sprintf(
		"project %q: %v systems requested, level %q allows at most %v",
		[_project.group, _systems, _project.level, _project_rights.max_systems],
	)
}

_submit_denials contains "request.priority: must be an integer >= 0" if {
	_has_priority
	not _is_id(_priority)
}

_submit_denials contains msg if {
	_may_submit
	_priority_over(_project_rights)
	msg := sprintf(
		"project %q: priority %v exceeds the ceiling %v of level %q",
		[_project.group, _priority, _project_rights.max_priority, _project.level],
	)
}

_submit_denials contains sprintf("request.mounts: must be a list of at most %d mounts", [max_mounts]) if {
	not _mount_list_ok
}

_submit_denials contains msg if {
	some msg in _mount_refusal
}

_submit_denials contains sprintf("mount %q: requested more than once", [path]) if {
	some path in {p | some p in _mount_path}
	count([p | some p in _mount_path; p == path]) > 1
}

_submit_denials contains msg if {
	_too_many_supplemental_groups
	msg := sprintf(
		"job needs %d supplementary groups (project + mounts); NFS AUTH_SYS carries at most %d",
		[count(_supplemental_groups), max_supplemental_groups],
	)
}

# --- limits (each read by its denial and by the explanation) -------------------------

default _too_many_systems := false

_too_many_systems if _systems > _project_rights.max_systems

# Whether the priority exceeds the ceiling of rights (the project's on submit,
# the job project's on set_priority).
_priority_over(rights) if _priority > rights.max_priority

default _too_many_mounts := false

_too_many_mounts if count(_request_mounts) > max_mounts

_mount_list_ok if {
	is_array(_request_mounts)
	not _too_many_mounts
}

default _too_many_supplemental_groups := false

_too_many_supplemental_groups if count(_supplemental_groups) > max_supplemental_groups

_positive(n) if {
	_is_id(n)
	n >= 1
}
