# METADATA
# title: Group privilege
# description: |
#   A user's level in each group. Membership comes only from the token's gid
#   and groups (the kernel's view on the user node); data.wsc.groups, keyed by
#   gid, only says which level a member gets: the group's default_level, or the
#   level listed for the member's uid under users (which may raise or lower it).
#   Every lookup is by key, never a scan of all groups: one read of
#   data.wsc.groups[<gid>] per group in the token, and data.wsc.levels (a
#   handful of levels) read once per decision. No helper rules: on this
#   path each rule reference costs a lookup.
package wsc.privilege

# METADATA
# description: |
#   {group name: [gid key, level]} for the groups with keys gid_keys (gids as
#   decimal strings, as data.wsc.groups is keyed) that the user with key
#   uid_key is in. A gid data.wsc.groups does not list, and a group whose
#   level data.wsc.levels does not define, give nothing.
members(gid_keys, uid_key) := {group.name: [key, level] |
	some key in gid_keys
	group := data.wsc.groups[key]
	level := object.get(group, ["users", uid_key], group.default_level)
	defined[level]
} if {
	defined := data.wsc.levels
}

# METADATA
# description: |
#   What member m (a value of members(): [gid key, level]) may do in its
#   group: data.wsc.levels[level] with the group's own limits for that level
#   laid over it.
rights(m) := object.union(data.wsc.levels[m[1]], limits) if {
	limits := data.wsc.groups[m[0]].limits[m[1]]
} else := data.wsc.levels[m[1]]
