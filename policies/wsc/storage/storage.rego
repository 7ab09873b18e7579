# METADATA
# title: NFS export matching
# description: |
#   Maps one clean requested path to the export that serves it and the rule
#   that decides it. data.wsc.exports is keyed by the export's mount path and
#   each export's rules by their path relative to it, so a lookup tries only
#   the request's own ancestors: cost grows with the depth of the path, never
#   with the number of exports. Longest prefix wins, for the export and then
#   for the rule inside it.
package wsc.storage

# METADATA
# description: |
#   {mount, name, pvc, rest} of the export whose mount path is the longest
#   ancestor of clean path c (ends: paths.ends(c)); rest is c relative to the
#   mount ("" for the mount itself).
export_of(c, ends) := {"mount": mount, "name": spec.name, "pvc": spec.pvc, "rest": rest} if {
	n := _mount_end(c, ends)
	mount := substring(c, 0, n)
	spec := data.wsc.exports[mount]
	rest := trim_prefix(substring(c, n, -1), "/")
}

# METADATA
# description: |
#   {key, path, rule, below} of the longest rule of export exp (from
#   export_of(c, ends)) covering c; below is c relative to the rule's path.
rule_of(exp, c, ends) := {
	"key": key,
	"path": _rule_path(exp.mount, key),
	"rule": rule,
	"below": _below(exp.rest, key),
} if {
	key := _rule_key(exp, c, ends)
	rule := data.wsc.exports[exp.mount].rules[key]
}

# METADATA
# description: |
#   The one gid a job needs for rule to grant mode: the project's gid when it
#   is among the groups (member, {group name: gid}) the rule grants, else the
#   lowest such gid. Undefined when the rule grants none of them.
granting_gids(rule, mode, member, project_gid) := _pick(_granting(rule, mode, member), project_gid)

_pick(gids, project_gid) := {project_gid} if {
	project_gid in gids
} else := {min(gids)} if {
	count(gids) > 0
}

# METADATA
# description: Whether rule's owner clause grants mode on a path below the rule (below) to who.
owner_grants(rule, mode, below, who) if {
	below != ""
	split(below, "/")[0] == _owner_id(rule.owner, who)
	mode in _covers[rule.owner.mode]
}

# One lookup per ancestor of c, longest wins; the root export "/" last.
_mount_end(c, ends) := n if {
	n := max([k | some k in ends; data.wsc.exports[substring(c, 0, k)]])
} else := 1 if {
	data.wsc.exports["/"]
}

# Rule keys are c's ancestors relative to the mount (c from offset start on).
_rule_key(exp, c, ends) := substring(c, start, n - start) if {
	start := count(c) - count(exp.rest)
	n := max([k | some k in ends; k > start; data.wsc.exports[exp.mount].rules[substring(c, start, k - start)]])
} else := "." if data.wsc.exports[exp.mount].rules["."]

_rule_path(mount, ".") := mount

_rule_path(mount, key) := concat("/", [trim_suffix(mount, "/"), key]) if key != "."

_below(rest, ".") := rest

_below(rest, key) := trim_prefix(trim_prefix(rest, key), "/") if key != "."

_granting(rule, mode, member) := {gid |
	some name, granted in object.get(rule, "groups", {})
	mode in _covers[granted]
	gid := member[name]
}

_owner_id(owner, who) := format_int(who.uid, 10) if object.get(owner, "by", "uid") == "uid"

_owner_id(owner, who) := who.user if owner.by == "user"

# The modes a grant covers: rw implies ro.
_covers := {"rw": {"ro", "rw"}, "ro": {"ro"}}
