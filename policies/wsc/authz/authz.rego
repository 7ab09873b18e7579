# METADATA
# title: Authorization decision
# description: |
#   data.wsc.authz.decision answers every action the cluster server asks
#   about (submit, get, logs, list, cancel, set_priority). Identity comes from the
#   token only; the target job's owner and project come from the stored pod.
#   The denials decide: allow holds exactly when the action has a positive
#   rule (_permitted) and no message in deny applies. Every denial is
#   reported, and any one of them denies the whole request. The allowed
#   document is built from the same helpers the denials read. uid 0 and
#   gid 0 never launch.
package wsc.authz

import data.wsc.privilege

# METADATA
# description: The actions this policy knows; anything else is denied.
actions := {"submit", "get", "logs", "list", "cancel", "set_priority"}

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
# description: Largest uid or gid (4294967295, (uid_t) -1, means "no id" to the kernel).
max_id := 4294967294

# METADATA
# title: decision
# description: |
#   The one document the server asks for; see docs/policy.md for its fields:
#   allow, reasons and privileges always; for an allowed request, what the
#   launcher applies (_outputs of its action).
# entrypoint: true
decision := object.union({"allow": true, "reasons": [], "privileges": privileges}, _outputs) if allow

else := {"allow": false, "reasons": reasons, "privileges": privileges}

# METADATA
# description: True exactly when a rule permits the action and no denial applies.
# scope: document
default allow := false

allow if {
	_permitted
	count(deny) == 0
}

# METADATA
# description: |
#   Every reason the request is denied, each naming the offending group,
#   path, level or limit. Contributed here (identity, action) and by
#   submit.rego and jobs.rego for their actions.
# scope: document
deny contains msg if {
	some msg in _identity_denials
}

deny contains sprintf("action %v: not one of %s", [action, concat(", ", sort(actions))]) if {
	action := object.get(input, "action", null)
	not action in actions
}

# METADATA
# description: |
#   Every denial, sorted; a generic one if nothing denies the request but no
#   rule permits it either. Empty when allowed.
# scope: document
default reasons := []

reasons := sort(deny) if count(deny) > 0

reasons := ["request denied: no rule permits it"] if {
	count(deny) == 0
	not allow
}

# METADATA
# description: |
#   {group name: level} for every known group a valid identity is in; empty
#   for an identity that is denied.
# scope: document
default privileges := {}

privileges := {name: m.level | some name, m in _membership} if _valid_identity

# --- list --------------------------------------------------------------------------

# The positive rule of each action (here list; submit.rego, jobs.rego): what
# permits it. allow also needs an empty deny.
default _permitted := false

# Any valid identity may list jobs; the server shows its own and those of the
# projects in visible_projects.
_permitted if input.action == "list"

_outputs := {"visible_projects": _visible_projects} if input.action == "list"

_visible_projects := sort([name |
	some name, m in _membership
	privilege.rights(m).view_others
])

# --- identity ------------------------------------------------------------------------

# Whether x is a uid or gid as the kernel has them: an integer in [0, max_id].
_is_id(x) if {
	is_number(x)
	x >= 0
	x <= max_id
	floor(x) == x
}

default _uid := null

_uid := input.identity.uid

default _gid := null

_gid := input.identity.gid

_identity_denials contains sprintf("identity: uid must be an integer in [1, %d]", [max_id]) if not _is_id(_uid)

_identity_denials contains "identity: uid 0 (root) is never allowed" if _uid == 0

_identity_denials contains sprintf("identity: gid must be an integer in [1, %d]", [max_id]) if not _is_id(_gid)

_identity_denials contains "identity: gid 0 (root group) is never allowed" if 0 in _member_gids

_identity_denials contains msg if {
	not _groups_ok
	msg := sprintf("identity: groups must be a list of at most %d gids", [max_identity_groups])
}

_groups_ok if {
	is_array(input.identity.groups)
	not _too_many_identity_groups
	every g in input.identity.groups {
		_is_id(g)
	}
}

default _too_many_identity_groups := false

_too_many_identity_groups if count(input.identity.groups) > max_identity_groups

# An identity may act when nothing is wrong with it.
_valid_identity if count(_identity_denials) == 0

# The token's gid and supplementary groups.
_member_gids := {input.identity.gid} | {g | some g in input.identity.groups}

# The token's uid as data.wsc.groups keys users; undefined when it is not a number.
_uid_key := format_int(input.identity.uid, 10)

_caller_has_uid if _uid_key

# The caller's membership (privilege.memberships) in each known group its
# token lists, by group name. Computed for any token whose ids are numbers,
# so that the project and job denials name the same problems beside the
# identity's own; for an oversized token, from the lowest gids only (it is
# denied anyway, and its denial stays bounded work).
default _membership := {}

_membership := privilege.memberships(array.slice(gid_keys, 0, max_identity_groups + 1), _uid_key) if {
	gid_keys := [format_int(g, 10) | some g in _member_gids]
}
