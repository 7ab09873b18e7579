# Submit: a job is charged to one project group the submitter is in; its level
# there bounds systems and priority, and every requested mount must be granted.
#
# _allowed computes only what an allowed submit needs; the reasons
# (_submit_denials) are evaluated only when the request is denied (see
# decision in authz.rego), and re-derive each failing mount's message from
# the same lookups.
package wsc.authz

import data.wsc.paths
import data.wsc.privilege
import data.wsc.storage

_allowed := {
	"allow": true,
	"reasons": [],
	"privileges": member.levels,
	"run_as": {"uid": input.identity.uid, "gid": member.gid},
	"supplemental_groups": supplemental,
	"mounts": [mount | some [mount, _] in grants],
	"priority": priority,
} if {
	input.action == "submit"
	[member, priority] := _submitter
	mounts := object.get(input.request, "mounts", [])
	is_array(mounts)
	count(mounts) <= 32
	grants := [g | some m in mounts; g := _grant(member, m)]
	count(grants) == count(mounts)
	count({mount.path | some [mount, _] in grants}) == count(mounts)
	supplemental := sort({g | some [_, g] in grants} | {member.gid})
	count(supplemental) <= 16
}

# [member, priority] when the caller's level in the project may submit jobs
# with the systems and priority requested: member is the caller as a member
# of the project ({"project": its name, "gid", "levels": privileges,
# "gid_keys": the token's gids as keys}), priority the one asked for or the
# level's default.
_submitter := [member, priority] if {
	[gid_keys, p] := _caller
	project := input.request.project
	[key, rights] := privilege.group(gid_keys, project, p[project])
	rights.submit
	systems := object.get(input.request, ["resources", "systems"], 1)
	is_number(systems)
	systems >= 1
	floor(systems) == systems
	systems <= rights.max_systems
	priority := object.get(input.request, "priority", rights.default_priority)
	is_number(priority)
	priority >= 0
	floor(priority) == priority
	priority <= rights.max_priority
	member := {"project": project, "gid": to_number(key), "levels": p, "gid_keys": gid_keys}
}

# [mount, gid] for request mount m when its export's rule grants it: mount as
# the decision lists it, gid the one supplementary group it needs (see
# _grant_gid). member: the caller's project ("project": its name and "gid"
# when the caller is a member of it, else null; no "project" when the
# request names none), "levels" (privileges) and "gid_keys" (the token's
# gids as keys). Function arguments are cache keys, one level per argument:
# what all mounts share comes first. The common case comes first and needs
# no further helper: a path paths.clean accepts, decided by a rule that
# grants the project group.
_grant(member, m) := [mount, member.gid] if {
	m.mode in {"ro", "rw"}
	c := paths.clean(m.path)
	[_, spec, rest, _, rule] := storage.lookup(c)
	rule.groups[member.project] in {m.mode, "rw"}
	mount := {"path": c, "export": spec.name, "pvc": spec.pvc, "sub_path": rest, "read_only": m.mode == "ro"}
} else := [mount, gid] if {
	c := _check(m)
	hit := storage.lookup(c)
	[_, spec, rest, _, _] := hit
	gid := _grant_gid(member, m.mode, hit)
	mount := {"path": c, "export": spec.name, "pvc": spec.pvc, "sub_path": rest, "read_only": m.mode == "ro"}
}

# The clean path of mount m when m is well-formed (mode "ro" or "rw") and
# its path acceptable; undefined otherwise (_check_error says why).
_check(m) := c if {
	c := paths.clean(m.path)
	m.mode in {"ro", "rw"}
} else := paths.normalise(m.path) if {
	is_string(m.path)
	not paths.problem(m.path)
	m.mode in {"ro", "rw"}
}

# The one gid a mount needs when the rule that decides it (hit, from
# storage.lookup) grants mode: the project's when the rule grants the project
# group, or when its owner clause grants the caller (a home directory needs
# no group: the project's is there anyway); else the lowest gid among the
# groups the rule grants that the caller is in. Undefined when the rule
# grants none of them.
_grant_gid(member, mode, hit) := member.gid if {
	hit[4].groups[member.project] in {mode, "rw"}
} else := member.gid if {
	[_, _, rest, key, rule] := hit
	storage.owner_grants(rule, key, rest, mode, input.identity)
} else := min({to_number(privilege.key_of(member.gid_keys, name)) |
	some name in storage.grantees(hit[4], mode)
	member.levels[name]
}) if {
	_ = member.project # a request that names no project gets no group's grant
}

# --- denial path: why a submit is not allowed ------------------------------------

# The caller's level in the project group, its gid key and what the level allows there.
_project_level := _any_levels[input.request.project]

_project := privilege.group(_any_gid_keys, input.request.project, _project_level)

default _project_gid := null

_project_gid := to_number(_project[0])

_project_rights := _project[1]

# The project's name when the caller is a member of it, null when not;
# undefined when the request names none.
_member_project := input.request.project if {
	_project_level
} else := null if {
	_ = input.request.project
}

default _systems := 1

_systems := input.request.resources.systems

default _request_mounts := []

_request_mounts := input.request.mounts

# Each mount the rules grant, by index: [mount, gid] (see _grant).
_grants[i] := g if {
	member := object.union(
		{"gid": _project_gid, "levels": _any_levels, "gid_keys": _any_gid_keys},
		{"project": p | p := _member_project},
	)
	some i, m in _request_mounts
	g := _grant(member, m)
}

_supplemental_groups := {_project_gid} | {g | some [_, g] in _grants}

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
	msg := _mount_error(m)
}

_submit_denials contains sprintf("mount %q: requested more than once", [p]) if {
	requested := [c | some m in _request_mounts; c := _check(m)]
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

_mount_error(m) := _check_error(m) if {
	not _check(m)
} else := sprintf("mount %q: outside every NFS export", [c]) if {
	c := _check(m)
	not storage.lookup(c)
} else := sprintf("mount %q: no rule of export %q covers it", [c, spec.name]) if {
	c := _check(m)
	[_, spec, _, _, rule] := storage.lookup(c)
	rule == null
} else := sprintf(
	"mount %q (%s): rule %q of export %q grants you no %s access",
	[c, m.mode, storage.rule_path(mount, key), spec.name, m.mode],
) if {
	c := _check(m)
	[mount, spec, _, key, _] := storage.lookup(c)
}

_check_error(m) := sprintf("mount %v: must be {path, mode}", [m]) if not is_object(m)

else := sprintf("mount %v: path is missing", [m]) if not "path" in object.keys(m)

else := sprintf("mount %v: path is not a string", [m.path]) if not is_string(m.path)

else := sprintf("mount %q: %s", [m.path, problem]) if {
	problem := paths.problem(m.path)
} else := sprintf("mount %q: mode must be \"ro\" or \"rw\"", [m.path]) if {
	not object.get(m, "mode", null) in {"ro", "rw"}
}
