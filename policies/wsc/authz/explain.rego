# Explanation: for the same input as the decision, what decided each part of
# it. Built only from the rules the decision itself uses (memberships, the
# project's rights, each mount's path, target, grant and refusal, the limit
# checks), so it cannot drift from the decision it explains.
package wsc.authz

import data.wsc.privilege

# METADATA
# title: explanation
# description: |
#   Why data.wsc.authz.decision came out as it did; its schema is in
#   docs/policy.md. allow and reasons are the decision's own; action says
#   whether the action is known and a positive rule permits it; identity
#   whether the token's ids may act at all; memberships which group entry
#   gave which level (a per-user entry or the group's default) and what it
#   allows there; project (submit) and job (get, logs, cancel, set_priority) what
#   decided the action; mounts, for each requested mount, the export and the
#   rule (the longest matching prefix) that decided it and how it was
#   granted or why refused; limits every limit checked, its value and
#   whether it was exceeded.
# entrypoint: true
explanation := {
	"allow": allow,
	"reasons": reasons,
	"action": {
		"name": object.get(input, "action", null),
		"known": object.get(input, "action", null) in actions,
		"permitted": _permitted,
	},
	"identity": {"valid": _valid_identity_flag, "problems": sort(_identity_denials)},
	"memberships": [_explain_membership(_membership_by_gid[gid]) | some gid in sort(object.keys(_membership_by_gid))],
	"project": _explain_project,
	"job": _explain_job,
	"mounts": _explain_mounts,
	"limits": _limits,
}

default _valid_identity_flag := false

_valid_identity_flag if _valid_identity

_membership_by_gid[m.gid] := m if some m in _membership

_explain_membership(m) := object.union(m, {"group_limits": privilege.group_limits(m), "rights": privilege.rights(m)})

# --- submit ------------------------------------------------------------------------

default _explain_project := null

_explain_project := {
	"named": object.get(input, ["request", "project"], null),
	"membership": _project_membership_or_null,
	"may_submit": _may_submit_flag,
} if {
	input.action == "submit"
}

default _project_membership_or_null := null

_project_membership_or_null := _explain_membership(_project)

default _may_submit_flag := false

_may_submit_flag if _may_submit

default _explain_mounts := []

_explain_mounts := [_explain_mount(i, m) | some i, m in _request_mounts] if input.action == "submit"

_explain_mount(i, m) := {
	"index": i,
	"request": m,
	"path": object.get(_mount_path, i, null),
	"export": _explain_export(target),
	"sub_path": _sub_path(target),
	"rule": _explain_rule(target),
	"grant": grant,
	"read_only": object.get(_granted_mount, [i, "read_only"], null),
	"refusal": object.get(_mount_refusal, i, null),
} if {
	target := object.get(_mount_target, i, null)
	grant := object.get(_mount_grant, i, null)
}

_explain_export(null) := null

_explain_export(target) := {
	"name": target.export.name,
	"mount_path": target.mount_path,
	"pvc": target.export.pvc,
} if {
	target != null
}

_sub_path(null) := null

_sub_path(target) := target.sub_path if target != null

# The rule that decided the mount (the longest covering its path); null when
# no export or no rule covers it.
_explain_rule(target) := null if target == null

else := null if target.rule == null

else := {
	"key": target.rule_key,
	"path": target.rule_path,
	"groups": object.get(target.rule, "groups", {}),
	"owner": object.get(target.rule, "owner", null),
}

# --- job actions ---------------------------------------------------------------------

default _explain_job := null

_explain_job := {
	"owner_uid": object.get(input, ["request", "job", "owner_uid"], null),
	"project": object.get(input, ["request", "job", "project"], null),
	"own": _own_job_flag,
	"membership": _job_membership_or_null,
	"right_needed": _right_needed[input.action],
	"permitted_by": _job_permitted_by,
} if {
	input.action in _job_actions
}

# The level right another user's job needs, by action.
_right_needed := {
	"get": "view_others",
	"logs": "view_others",
	"cancel": "act_on_others",
	"set_priority": "act_on_others",
}

default _own_job_flag := false

_own_job_flag if _own_job

default _job_membership_or_null := null

_job_membership_or_null := _explain_membership(_job_membership)

# "owner" for your own job, "level" when your level in the job's project has
# the right another user's job needs, else null.
default _job_permitted_by := null

_job_permitted_by := "owner" if _own_job

_job_permitted_by := "level" if {
	not _own_job
	_permitted
}

# --- limits ----------------------------------------------------------------------------

_limits["max_identity_groups"] := _policy_limit(
	max_identity_groups,
	count(input.identity.groups),
	_too_many_identity_groups,
) if {
	is_array(input.identity.groups)
}

_limits["max_mounts"] := _policy_limit(max_mounts, count(_request_mounts), _too_many_mounts) if {
	input.action == "submit"
	is_array(_request_mounts)
}

_limits["max_supplemental_groups"] := _policy_limit(
	max_supplemental_groups,
	count(_supplemental_groups),
	_too_many_supplemental_groups,
) if {
	input.action == "submit"
}

_limits["max_systems"] := _level_limit("max_systems", _project, _systems, _too_many_systems) if {
	input.action == "submit"
}

_limits["max_priority"] := _level_limit("max_priority", _project, _priority, _priority_over_flag(_project_rights)) if {
	input.action == "submit"
}

_limits["max_priority"] := _level_limit(
	"max_priority",
	_job_membership,
	_priority,
	_priority_over_flag(_job_rights),
) if {
	input.action == "set_priority"
}

_policy_limit(limit, value, exceeded) := {"max": limit, "value": value, "exceeded": exceeded, "set_by": "policy"}

# A level's limit in the group of membership m: set_by says whether the
# group's own limits or the level's definition set it.
_level_limit(field, m, value, exceeded) := {
	"max": privilege.rights(m)[field],
	"value": value,
	"exceeded": exceeded,
	"set_by": _limit_source(m, field),
	"group": m.group,
	"level": m.level,
}

_limit_source(m, field) := "group_limits" if field in object.keys(privilege.group_limits(m))

else := "level"

_priority_over_flag(rights) if _priority_over(rights)

else := false
