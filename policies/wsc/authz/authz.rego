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
decision := object.union({"allow": allow, "reasons": reasons, "privileges": privileges}, _outputs)

# METADATA
# description: |
#   True only when the positive rule for the action permits it. Each _permitted
#   body is the complete condition for its action: it implies that no _denials
#   message applies (test_allowed_iff_no_denial checks this on every test case),
#   so an allowed decision never evaluates the denial rules.
# scope: document
default allow := false

allow if _permitted

# METADATA
# description: |
#   Every denial, sorted; a generic one if nothing denies the request but no
#   rule permits it either. Empty when allowed. Evaluated only for a denied
#   request: the allow path builds no messages.
# scope: document
default reasons := []

reasons := _reasons if not allow

default _reasons := ["request denied: no rule permits it"]

_reasons := sort(_denials) if count(_denials) > 0

# METADATA
# description: "{group name: level} for every known group the identity is in."
# scope: document
default privileges := {}

privileges := {name: m[1] | some name, m in _members} if _identity_ok

default _outputs := {}

_outputs := _extras if allow

default _extras := {}

_extras := {
	"run_as": {"uid": input.identity.uid, "gid": _project_gid},
	"supplemental_groups": _supplemental_groups,
	"mounts": [g.mount | some g in _grants],
	"priority": _priority,
} if {
	input.action == "submit"
}

_extras := {"priority": _priority} if input.action == "set_priority"

_extras := {"visible_projects": sort([name |
	some name, m in _members
	privilege.rights(m).view_others
])} if {
	input.action == "list"
}

# --- identity ------------------------------------------------------------------

# uid, gid and groups as decimal strings (the keys of data.wsc.groups), when
# groups is a list of at most 1024 and every id is a plain positive decimal
# integer below 4294967295: the common case, checked and converted for all ids
# at once (one marshal, one match, one split) instead of one id at a time.
_id_keys := split(trim(j, "[]"), ",") if {
	is_array(input.identity.groups)
	count(input.identity.groups) <= 1024 # max_identity_groups, written out: see _permitted
	ids := array.concat([input.identity.uid, input.identity.gid], input.identity.groups)
	max(ids) < 4294967295
	j := json.marshal(ids)
	regex.match(`^\[[1-9][0-9]{0,9}(,[1-9][0-9]{0,9})*\]$`, j)
}

# [uid, gids...] as keys; the slow form covers ids such as 2001.0 or 1e3.
_keys := _id_keys if _id_keys

else := array.concat([format_int(input.identity.uid, 10)], [format_int(g, 10) | some g in _member_gids])

# {group name: [gid key, level]} for every known group the identity is in,
# each looked up once.
default _members := {}

_members := privilege.members(array.slice(_keys, 1, count(_keys)), _keys[0])

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

# Fast: _id_keys (all ids plain integers in range, so none is 0). Otherwise
# the same conditions one id at a time.
_identity_ok if {
	_id_keys
} else if {
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
# Each is the complete condition for its action (see allow). On this path the
# limits (max_mounts, max_supplemental_groups, ...) are written out and small
# helpers inlined: every rule or function reference costs a lookup, and these
# bodies run on every decision. The tests hold the numbers to the constants.

_permitted if {
	input.action == "list"
	_identity_ok
}

_permitted if {
	input.action == "get"
	_identity_ok
	_may_see_job
}

_permitted if {
	input.action == "cancel"
	_identity_ok
	_may_act_on_job
}

_permitted if {
	input.action == "set_priority"
	_identity_ok
	_may_act_on_job
	_is_id(_priority)
	_priority <= _job_rights.max_priority
}

_permitted if {
	input.action == "submit"
	_identity_ok
	is_array(_request_mounts)
	count(_request_mounts) <= 32
	_project_rights.submit
	is_number(_systems)
	_systems >= 1
	floor(_systems) == _systems
	_systems <= _project_rights.max_systems
	is_number(_priority)
	_priority >= 0
	floor(_priority) == _priority
	_priority <= _project_rights.max_priority
	count(_grants) == count(_request_mounts)
	count({c.path | some c in _checked}) == count(_checked)
	count(_supplemental_groups) <= 16
}
