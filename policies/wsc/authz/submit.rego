# Submit: a job is charged to one project group the submitter is in; its level
# there bounds systems and priority, and every requested mount must be granted.
package wsc.authz

import data.wsc.paths
import data.wsc.privilege
import data.wsc.storage

default _project_gid := null

_project_gid := _member_names[input.request.project]

_project_rights := privilege.rights(_project_gid, _project_level)

_project_level := _membership[_project_gid].level

default _systems := 1

_systems := input.request.resources.systems

default _request_mounts := []

_request_mounts := input.request.mounts

_supplemental_groups := sort({_project_gid} | union({r.gids | some r in _mounts}))

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
	some r in _mounts
	msg := r.error
}

_submit_denials contains sprintf("mount %q: requested more than once", [p]) if {
	requested := [c.path | some c in _checked; c.path]
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

# Each requested mount checked once: {"path": clean path, "mode"} or {"error"}.
_checked[i] := _check(m) if some i, m in _request_mounts

_check(m) := {"error": sprintf("mount %v: must be {path, mode}", [m])} if not is_object(m)

else := {"error": sprintf("mount %v: path is missing", [m])} if not "path" in object.keys(m)

else := {"error": sprintf("mount %v: path is not a string", [m.path])} if not is_string(m.path)

else := {"error": sprintf("mount %q: %s", [m.path, problem])} if {
	problem := paths.problem(m.path)
} else := {"error": sprintf("mount %q: mode must be \"ro\" or \"rw\"", [m.path])} if {
	not object.get(m, "mode", null) in {"ro", "rw"}
} else := {"path": paths.normalise(m.path), "mode": m.mode}

# The export and rule serving each checked mount.
_ends[i] := paths.ends(c.path) if some i, c in _checked

_export[i] := storage.export_of(_checked[i].path, ends) if some i, ends in _ends

_rule[i] := storage.rule_of(exp, _checked[i].path, _ends[i]) if some i, exp in _export

# {index: {"mount": grant, "gids": set} or {"error": message}} for every requested mount.
_mounts[i] := {"error": c.error} if some i, c in _checked

_mounts[i] := {"error": sprintf("mount %q: outside every NFS export", [c.path])} if {
	some i, c in _checked
	c.path
	not _export[i]
}

_mounts[i] := {"error": sprintf("mount %q: no rule of export %q covers it", [_checked[i].path, exp.name])} if {
	some i, exp in _export
	not _rule[i]
}

_mounts[i] := _grant(_checked[i], _export[i], hit) if some i, hit in _rule

_grant(c, exp, hit) := {"mount": _mount_out(c, exp), "gids": set()} if {
	storage.owner_grants(hit.rule, c.mode, hit.below, input.identity)
} else := {"mount": _mount_out(c, exp), "gids": gids} if {
	gids := storage.granting_gids(hit.rule, c.mode, _member_names, _project_gid)
} else := {"error": sprintf(
	"mount %q (%s): rule %q of export %q grants you no %s access",
	[c.path, c.mode, hit.path, exp.name, c.mode],
)}

_mount_out(c, exp) := {
	"path": c.path,
	"export": exp.name,
	"pvc": exp.pvc,
	"sub_path": exp.rest,
	"read_only": c.mode == "ro",
}
