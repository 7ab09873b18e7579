# METADATA
# title: Group privilege
# description: |
#   A user's level in each group. Membership comes only from the token's gid
#   and groups (the kernel's view on the user node); data.wsc.groups, keyed by
#   gid, only says which level a member gets: the group's default_level, or the
#   level listed for the member's uid under users (which may raise or lower it).
#   Every lookup is by key, never a scan of all groups: data.wsc.groups and
#   data.wsc.levels are read whole once per decision and probed with the
#   token's gids (never iterated, never passed to a function: either would
#   touch every group).
package wsc.privilege

# METADATA
# description: |
#   {group name: level} for the groups with keys gid_keys (gids as decimal
#   strings, as data.wsc.groups is keyed) that the user with key uid_key is
#   in. A gid data.wsc.groups does not list, and a group whose level
#   data.wsc.levels does not define, give nothing.
levels(gid_keys, uid_key) := {group.name: level |
	some key in gid_keys
	group := groups[key]
	level := object.get(group, user_level, group.default_level)
	_ = defined[level]
} if {
	groups := data.wsc.groups
	defined := data.wsc.levels
	user_level := array.concat(["users"], [uid_key]) # a value, not a literal re-plugged per group
}

# METADATA
# description: |
#   The key (gid as a decimal string) of the group called name among
#   gid_keys. Undefined when none of them is called name.
key_of(gid_keys, name) := key if {
	groups := data.wsc.groups
	some key in gid_keys
	name = groups[key].name
}

# METADATA
# description: |
#   [gid key, rights] of the caller's group called name (among gid_keys) in
#   which the caller holds level (from levels()): rights is what the level
#   allows there, data.wsc.levels[level] with the group's own limits for that
#   level laid over it. Limits hold only the numbers (data.wsc.datacheck), so
#   a level's booleans (submit, view_others, act_on_others) need no group.
group(gid_keys, name, level) := [key, object.union(defined[level], limits)] if {
	groups := data.wsc.groups
	defined := data.wsc.levels
	some key in gid_keys
	name = groups[key].name
	limits := object.get(groups[key], ["limits", level], {})
}
