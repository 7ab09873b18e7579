# METADATA
# title: Authorization decision
# description: |
#   data.wsc.authz.decision answers every action the cluster server asks
#   about (submit, get, list, cancel, set_priority). Identity comes from the
#   token only; the target job's owner and project come from the stored pod.
#   Denied by default: allow needs both a positive rule for the action and no
#   denial; every denial is reported, and any one of them denies the whole
#   request. uid 0 and gid 0 are never allowed.
package wsc.authz

import data.wsc.privilege

# METADATA
# description: The actions this policy knows; anything else is denied.
actions := {"submit", "get", "list", "cancel", "set_priority"}

# METADATA
# description: Most mounts one job may request.
max_mounts := 32

# METADATA
# description: NFS AUTH_SYS carries at most 16 supplementary gids per request.
max_supplemental_groups := 16

# METADATA
# description: Most gids an identity may carry (bounds the work per decision).
max_identity_groups := 1024

# METADATA
# title: decision
# description: The one document the server asks for; see docs/policy.md for its fields.
# entrypoint: true
decision := object.union({"allow": allow, "reasons": reasons, "privileges": privileges}, _grants)

# METADATA
# description: True only when a positive rule permits the action and nothing denies it.
# scope: document
default allow := false

allow if {
	_permitted
	count(_denials) == 0
}

# METADATA
# description: Every denial, sorted; a generic one if nothing permitted the request.
# scope: document
default reasons := []

reasons := sort(_denials) if count(_denials) > 0

reasons := ["request denied: no rule permits it"] if {
	count(_denials) == 0
	not _permitted
}

# METADATA
# description: "{group name: level} for every known group the identity is in."
# scope: document
default privileges := {}

privileges := {m.name: m.level | some m in _membership} if _identity_ok

default _grants := {}

_grants := _extras if allow

default _extras := {}

_extras := {
	"run_as": {"uid": input.identity.uid, "gid": _project_gid},
	"supplemental_groups": _supplemental_groups,
	"mounts": [r.mount | some r in _mounts],
	"priority": _priority,
} if {
	input.action == "submit"
}

_extras := {"priority": _priority} if input.action == "set_priority"

_extras := {"visible_projects": sort([m.name |
	some g, m in _membership
	privilege.rights(g, m.level).view_others
])} if {
	input.action == "list"
}

# --- identity ------------------------------------------------------------------

_is_id(x) if {
	is_number(x)
	x >= 0
	x < 4294967295
	floor(x) == x
}

_groups_ok if {
	is_array(input.identity.groups)
	count(input.identity.groups) <= max_identity_groups
	every g in input.identity.groups {
		is_number(g)
		g >= 0
		g < 4294967295
		floor(g) == g
	}
}

_member_gids := {input.identity.gid} | {g | some g in input.identity.groups}

# {gid: {name, level, rights}} for every known group the identity is in, looked up once.
_membership[g] := privilege.membership(g, input.identity.uid) if some g in _member_gids

# {group name: gid} for the same groups.
_member_names[m.name] := g if some g, m in _membership

_identity_ok if {
	_is_id(input.identity.uid)
	_is_id(input.identity.gid)
	_groups_ok
	input.identity.uid != 0
	not 0 in _member_gids
}

_denials contains "identity: uid must be an integer in [1, 4294967294]" if {
	not _is_id(object.get(input, ["identity", "uid"], null))
}

_denials contains "identity: uid 0 (root) is never allowed" if input.identity.uid == 0

_denials contains "identity: gid must be an integer in [1, 4294967294]" if {
	not _is_id(object.get(input, ["identity", "gid"], null))
}

_denials contains "identity: groups must be a list of at most 1024 gids" if not _groups_ok

_denials contains "identity: gid 0 (root group) is never allowed" if 0 in _member_gids

_denials contains sprintf("action %v: not one of cancel, get, list, set_priority, submit", [a]) if {
	a := object.get(input, "action", null)
	not a in actions
}

_denials contains msg if {
	input.action == "submit"
	some msg in _submit_denials
}

_denials contains msg if {
	input.action in {"get", "cancel", "set_priority"}
	some msg in _job_denials
}

# --- positive rules, one per action ---------------------------------------------

_permitted if {
	_identity_ok
	input.action == "list"
}

_permitted if {
	_identity_ok
	input.action == "get"
	_may_see_job
}

_permitted if {
	_identity_ok
	input.action == "cancel"
	_may_act_on_job
}

_permitted if {
	_identity_ok
	input.action == "set_priority"
	_may_act_on_job
	_is_id(_priority)
	_priority <= _job_rights.max_priority
}

_permitted if {
	_identity_ok
	input.action == "submit"
	_project_rights.submit
	_positive(_systems)
	_systems <= _project_rights.max_systems
	_is_id(_priority)
	_priority <= _project_rights.max_priority
	count(_supplemental_groups) <= max_supplemental_groups
	count(_mounts) == count(_request_mounts)
	every r in _mounts {
		r.mount
	}
}
