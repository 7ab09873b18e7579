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
#   The membership that the group with key gid_key (a gid as a decimal
#   string, as data.wsc.groups is keyed) gives the user with key uid_key:
#   {gid, group (its name), level, level_from: "user" when users lists the
#   uid, else "default", group_limits: the group's own numbers for that level,
#   {} when it sets none}. Undefined for a gid data.wsc.groups does not list,
#   and for a level data.wsc.levels does not define.
membership(gid_key, uid_key) := {
	"gid": to_number(gid_key),
	"group": group.name,
	"level": assigned.level,
	"level_from": assigned.from,
	"group_limits": object.get(group, ["limits", assigned.level], {}),
} if {
	group := data.wsc.groups[gid_key]
	assigned := _assigned_level(group, uid_key)
	data.wsc.levels[assigned.level]
}

# METADATA
# description: |
#   What a membership (from membership()) allows in its group: the level's
#   definition in data.wsc.levels with the group's own limits laid over it.
#   Limits hold only numbers (data.wsc.datacheck), so a level's booleans
#   (submit, view_others, act_on_others) hold in every group.
rights(m) := object.union(data.wsc.levels[m.level], m.group_limits)

# The level group gives the user with key uid_key, and where it comes from.
_assigned_level(group, uid_key) := {"level": level, "from": "user"} if {
	level := group.users[uid_key]
} else := {"level": group.default_level, "from": "default"}
