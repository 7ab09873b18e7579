# Submit: a job is charged to one project group the submitter is in; its level
# there bounds systems and priority, and every requested mount must be granted.
#
# The decision computes only what an allowed submit needs (_grants and the
# limits); the reasons (_submit_denials) are evaluated only when the request
# is denied (see reasons in authz.rego), and re-derive each failing mount's
# message from the same lookups.
package wsc.authz

import data.wsc.paths
import data.wsc.privilege
import data.wsc.storage

# The caller's membership of the project group: [gid key, level].
_project := _members[input.request.project]

default _project_gid := null

_project_gid := to_number(_project[0])

_project_rights := privilege.rights(_project)

_project_level := _project[1]

default _systems := 1

_systems := input.request.resources.systems

default _request_mounts := []

_request_mounts := input.request.mounts

_supplemental_groups := sort({_project_gid} | union({g.gids | some g in _grants}))

_submit_denials contains "request.project: must name one of your groups" if {
	not is_string(object.get(input, ["request", "project"], null))
}

_submit_denials contains sprintf("project %q: not one of your groups", [input.request.project]) if {
	is_string(input.request.project)
	_project_gid == null
}

_submit_denials contains sprintf("project %q: level %q may not submit jobs", [p, _project_level]) if {
	p := input.request.project
	not _project_rights.submit
}

_submit_denials contains "request.resources.systems: must be an integer >= 1" if not _positive(_systems)

_submit_denials contains msg if {
	_project_rights.submit
	_systems > _project_rights.max_systems
	msg := sprintf(
		"project %q: %v systems requested, level %q allows at most %v",
		[input.request.project, _systems, _project_level, _project_rights.max_systems],
	)
}

_submit_denials contains "request.priority: must be an integer >= 0" if {
	_has_priority
	not _is_id(_priority)
}

_submit_denials contains msg if {
	_project_rights.submit
	_priority > _project_rights.max_priority
	msg := sprintf(
		"project %q: priority %v exceeds the ceiling %v of level %q",
		[input.request.project, _priority, _project_rights.max_priority, _project_level],
	)
}

_submit_denials contains "request.mounts: must be a list of at most 32 mounts" if {
	not _mount_list_ok
}

_submit_denials contains msg if {
	some i, m in _request_mounts
	not _grants[i]
	msg := _mount_error(i, m)
}

_submit_denials contains sprintf("mount %q: requested more than once", [p]) if {
	requested := [c.path | some c in _checked]
	some p in {q | some q in requested}
	count([q | some q in requested; q == p]) > 1
}

_submit_denials contains msg if {
	n := count(_supplemental_groups)
	n > max_supplemental_groups
	msg := sprintf(
		"job needs %d supplementary groups (project + mounts); NFS AUTH_SYS carries at most %d",
		[n, max_supplemental_groups],
	)
}

_mount_list_ok if {
	is_array(_request_mounts)
	count(_request_mounts) <= max_mounts
}

_positive(n) if {
	_is_id(n)
	n >= 1
}

# Each acceptable mount, by index: {"path": clean path, "mode"}. Mounts that
# are malformed or whose path is refused are absent (_check_error says why).
_checked[i] := c if {
	some i, m in _request_mounts
	c := _check(m)
}

_check(m) := {"path": p, "mode": m.mode} if {
	p := paths.clean(m.path)
	m.mode in {"ro", "rw"}
} else := {"path": paths.normalise(m.path), "mode": m.mode} if {
	is_string(m.path)
	not paths.problem(m.path)
	m.mode in {"ro", "rw"}
}

# {index: {"mount": grant, "gids": set}} for every mount its export's rule grants.
_grants[i] := {"mount": mount, "gids": gids} if {
	some i, c in _checked
	exp := storage.export_of(c.path)
	hit := storage.rule_of(exp)
	gids := _grant_gids(hit, c.mode)
	mount := {
		"path": c.path,
		"export": exp.name,
		"pvc": exp.pvc,
		"sub_path": exp.rest,
		"read_only": c.mode == "ro",
	}
}

# No gid for a directory the rule's owner clause gives the caller; else the
# one gid through which the rule's groups grant the mode.
_grant_gids(hit, mode) := set() if {
	storage.owner_grants(hit.rule, mode, hit.below, input.identity)
} else := {gid} if {
	gid := storage.granting_gid(hit.rule, mode, _members, input.request.project)
}

# --- denial path: why a mount was not granted ------------------------------------

_mount_error(i, m) := _check_error(m) if {
	not _checked[i]
} else := sprintf("mount %q: outside every NFS export", [c.path]) if {
	c := _checked[i]
	not storage.export_of(c.path)
} else := sprintf("mount %q: no rule of export %q covers it", [c.path, exp.name]) if {
	c := _checked[i]
	exp := storage.export_of(c.path)
	not storage.rule_of(exp)
} else := sprintf(
	"mount %q (%s): rule %q of export %q grants you no %s access",
	[c.path, c.mode, hit.path, exp.name, c.mode],
) if {
	c := _checked[i]
	exp := storage.export_of(c.path)
	hit := storage.rule_of(exp)
}

_check_error(m) := sprintf("mount %v: must be {path, mode}", [m]) if not is_object(m)

else := sprintf("mount %v: path is missing", [m]) if not "path" in object.keys(m)

else := sprintf("mount %v: path is not a string", [m.path]) if not is_string(m.path)

else := sprintf("mount %q: %s", [m.path, problem]) if {
	problem := paths.problem(m.path)
} else := sprintf("mount %q: mode must be \"ro\" or \"rw\"", [m.path]) if {
	not object.get(m, "mode", null) in {"ro", "rw"}
}
