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
# description: |
#   The one document the server asks for; see docs/policy.md for its fields.
#   An allowed request's document is built by the positive rule for its
#   action (_allowed), which reads only what that action needs; everything
#   else (reasons, the generic denial) is computed only for a denied one.
# entrypoint: true
decision := _allowed if _ = _allowed

else := {"allow": false, "reasons": reasons, "privileges": privileges}

# METADATA
# description: |
#   True only when the positive rule for the action permits it. Each _allowed
#   body is the complete condition for its action: it implies that no
#   _denials message applies (test_allowed_iff_no_denial checks this on every
#   test case), so an allowed decision never evaluates the denial rules.
# scope: document
default allow := false

allow if _allowed

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

privileges := _caller[1]

# METADATA
# description: |
#   The allowed decision for the request, by action (list here; submit in
#   submit.rego; get, cancel and set_priority in jobs.rego). Undefined when
#   the action's conditions do not all hold. On this path the limits
#   (max_mounts, ...) are written out and helpers inlined: every rule or
#   function reference costs a lookup, and these bodies run on every
#   decision. The tests hold the numbers to the constants.
_allowed := {
	"allow": true,
	"reasons": [],
	"privileges": p,
	"visible_projects": sort([name |
		some name, level in p
		defined[level].view_others
	]),
} if {
	input.action == "list"
	[_, p] := _caller
	defined := data.wsc.levels
}

# --- identity ------------------------------------------------------------------

# [gid keys, levels] of a valid identity, undefined for any other: gid keys
# are the token's gid and groups as decimal strings (data.wsc.groups is keyed
# so), levels its privileges. The common case - groups a list of at most 1024
# and every id a plain positive decimal integer below 4294967295 - is checked
# and converted for all ids at once (one marshal, one match, one split)
# instead of one id at a time; ids such as 2001.0 or 1e3 take the slow form,
# which checks one id at a time. levels is privilege.levels(gid_keys,
# keys[0]) written out: a comprehension in this body runs markedly faster than
# the same one in a function (test_caller_levels_are_privilege_levels holds
# the two equal).
_caller := [gid_keys, levels] if {
	is_array(input.identity.groups)
	count(input.identity.groups) <= 1024 # max_identity_groups, written out: see _allowed
	ids := array.concat([input.identity.uid, input.identity.gid], input.identity.groups)
	max(ids) < 4294967295
	j := json.marshal(ids)
	regex.match(`^\[[1-9][0-9]{0,9}(,[1-9][0-9]{0,9})*\]$`, j)
	keys := split(trim(j, "[]"), ",")
	gid_keys := array.slice(keys, 1, 1026)
	groups := data.wsc.groups
	defined := data.wsc.levels
	user_level := array.concat(["users"], [keys[0]])
	levels := {group.name: level |
		some key in gid_keys
		group := groups[key]
		level := object.get(group, user_level, group.default_level)
		_ = defined[level]
	}
} else := [_any_gid_keys, _any_levels] if {
	_is_id(input.identity.uid)
	_is_id(input.identity.gid)
	_groups_ok
	input.identity.uid != 0
	not 0 in _member_gids
}

# Denial path: the keys of any identity whose ids format, valid or not, and
# the levels they give, so that the project and job denials name the same
# problems beside the identity's own.
_any_keys := array.concat([format_int(input.identity.uid, 10)], [format_int(g, 10) | some g in _member_gids])

_any_gid_keys := array.slice(_any_keys, 1, 1026)

default _any_levels := {}

_any_levels := privilege.levels(_any_gid_keys, _any_keys[0])

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
