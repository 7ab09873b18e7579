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
#   {name, level} of user uid in the group with gid g. Undefined for an
#   unknown group or a level data.wsc.levels does not define.
membership(g, uid) := {"name": group.name, "level": level} if {
	group := data.wsc.groups[format_int(g, 10)]
	level := object.get(group, ["users", format_int(uid, 10)], group.default_level)
	data.wsc.levels[level]
}

# METADATA
# description: |
#   What level allows in the group with gid g: data.wsc.levels[level] with the
#   group's own limits for that level laid over it.
rights(g, level) := object.union(data.wsc.levels[level], limits) if {
	limits := data.wsc.groups[format_int(g, 10)].limits[level]
} else := data.wsc.levels[level]
