# METADATA
# title: NFS export matching
# description: |
#   Maps one clean requested path to the export that serves it and the rule
#   that decides it. data.wsc.exports is keyed by the export's mount path and
#   each export's rules by their path relative to it, so a lookup tries only
#   the request's own ancestors: cost grows with the depth of the path, never
#   with the number of exports. Longest prefix wins, for the export and then
#   for the rule inside it. The export's rules are read with it, once, and
#   probed in memory.
package wsc.storage

# METADATA
# description: |
#   {mount, name, pvc, rules, rest} of the export whose mount path is the
#   longest ancestor of clean path c; rest is c relative to the mount ("" for
#   the mount itself). Undefined when no export covers c. One probe per
#   ancestor of c (each "/" after the first, and c itself), longest wins; the
#   root export "/" last.
export_of(c) := _export(substring(c, 0, n), substring(c, n + 1, -1)) if {
	n := max([k |
		some k in array.concat(indexof_n(c, "/"), [count(c)])
		k > 0
		data.wsc.exports[substring(c, 0, k)]
	])
} else := _export("/", substring(c, 1, -1))

_export(mount, rest) := {
	"mount": mount,
	"name": spec.name,
	"pvc": spec.pvc,
	"rules": object.get(spec, "rules", {}),
	"rest": rest,
} if {
	spec := data.wsc.exports[mount]
}

# METADATA
# description: |
#   {path, rule, below} of the longest rule of export exp (from export_of)
#   covering it: path is the rule's absolute path, below the request relative
#   to the rule. Undefined when no rule covers the request. The rules are
#   probed in memory, one probe per ancestor of exp.rest; "." last.
rule_of(exp) := {
	"path": concat("/", [trim_suffix(exp.mount, "/"), key]),
	"rule": rule,
	"below": substring(exp.rest, n + 1, -1),
} if {
	n := max([k |
		some k in array.concat(indexof_n(exp.rest, "/"), [count(exp.rest)])
		k > 0
		exp.rules[substring(exp.rest, 0, k)]
	])
	key := substring(exp.rest, 0, n)
	rule := exp.rules[key]
} else := {"path": exp.mount, "rule": exp.rules["."], "below": exp.rest}

# METADATA
# description: |
#   The one gid a job needs for rule to grant mode: the gid of the project
#   (a group name) when the rule grants it, else the lowest gid among the
#   groups the rule grants that the user is in (members: privilege.members).
#   Undefined when the rule grants none of them.
granting_gid(rule, mode, members, project) := to_number(gid) if {
	rule.groups[project] in {mode, "rw"}
	gid := members[project][0]
} else := min(gids) if {
	gids := {to_number(members[name][0]) |
		some name, granted in rule.groups
		granted in {mode, "rw"}
	}
	count(gids) > 0
}

# METADATA
# description: Whether rule's owner clause grants mode on a path below the rule (below) to who.
owner_grants(rule, mode, below, who) if {
	rule.owner.mode in {mode, "rw"}
	below != ""
	split(below, "/")[0] == _owner_id(rule.owner, who)
}

_owner_id(owner, who) := format_int(who.uid, 10) if object.get(owner, "by", "uid") == "uid"

_owner_id(owner, who) := who.user if owner.by == "user"
