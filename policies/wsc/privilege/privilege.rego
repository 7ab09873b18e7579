# METADATA
# title: Group privilege
# description: |
#   A user's level in each group. Membership comes only from the token's gid
#   and groups (the kernel's view on the user node); data.wsc.groups, keyed by
#   gid, only says which level a member gets: the group's default_level, or the
#   level listed for the member's uid under users (which may raise or lower it).
#   Every lookup is by key, never a scan of all groups.
package wsc.privilege

# METADATA
# description: |
#   {group name: membership} for the groups with keys gid_keys (gids as
#   decimal strings, as data.wsc.groups is keyed) that the user with key
#   uid_key is in. A membership is {gid, group (its name), level, level_from:
#   "user" when the group's users lists the uid, else "default"}. A gid
#   data.wsc.groups does not list, and a group whose level data.wsc.levels
#   does not define, give nothing. Both are read whole once
#   and probed by key, never iterated.
memberships(gid_keys, uid_key) := {group.name: membership |
	groups := data.wsc.groups
	defined := data.wsc.levels
	some gid_key in gid_keys
	group := groups[gid_key]
	assigned := _assigned_level(object.get(group, "users", {}), group.default_level, uid_key)
	defined[assigned.level]
	membership := {
		"gid": to_number(gid_key),
		"group": group.name,
		"level": assigned.level,
		"level_from": assigned.from,
	}
}

# METADATA
# description: |
#   What a membership (from membership()) allows in its group: the level's
#   definition in data.wsc.levels with the group's own limits laid over it.
#   Limits hold only numbers (data.wsc.datacheck), so a level's booleans
#   (submit, view_others, act_on_others) hold in every group.
rights(m) := object.union(data.wsc.levels[m.level], group_limits(m))

# METADATA
# description: The numbers the group of membership m sets for m's level itself; {} when it sets none.
group_limits(m) := object.get(data.wsc.groups[format_int(m.gid, 10)], ["limits", m.level], {})

# The level a group with per-user levels users and default_level gives the
# user with key uid_key, and where it comes from. (The group's two fields,
# not the group: a smaller argument is a cheaper cache key.)
_assigned_level(users, default_level, uid_key) := {"level": level, "from": "user"} if {
	level := users[uid_key]
} else := {"level": default_level, "from": "default"}
