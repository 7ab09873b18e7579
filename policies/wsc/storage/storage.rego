# METADATA
# title: NFS export matching
# description: |
#   Maps one clean requested path to the export that serves it and the rule
#   that decides it. data.wsc.exports is keyed by the export's mount path and
#   each export's rules by their path relative to it, so a lookup tries only
#   the request's own ancestors: cost grows with the depth of the path, never
#   with the number of exports. Longest prefix wins, for the export and then
#   for the rule inside it. data.wsc.exports is read whole once per decision
#   and probed by key (never iterated, never passed to a function: either
#   would touch every export).
package wsc.storage

# METADATA
# description: |
#   [mount, spec, rest, key, rule] for clean path c: the export whose mount
#   path is the longest ancestor of c (c itself included; the root export "/"
#   is the shortest), spec = data.wsc.exports[mount], rest = c relative to
#   mount ("" for the mount itself), and the longest of its rules covering
#   rest: key relative to the export ("." when no longer one does) and the
#   rule; both null when no rule covers rest. Undefined when no export
#   covers c.
#   One probe per ancestor, first of c among the exports, then of rest among
#   the export's rules. All candidates are prefixes of the same path, so the
#   longest match is the largest position that hits; -1 (no hit) stands for
#   ".". The export itself (rest "") is covered only by ".".
lookup(c) := [mount, spec, rest, key, object.get(rules, key, null)] if {
	exports := data.wsc.exports
	n := max([k |
		some k in array.concat(array.slice(indexof_n(c, "/"), 1, 1025), [1, count(c)])
		_ = exports[substring(c, 0, k)]
	])
	mount := substring(c, 0, n)
	spec := exports[mount]
	rest := trim_prefix(substring(c, n, -1), "/")
	rules := object.get(spec, "rules", {})
	r := max(array.concat([-1], [k |
		# where each "/" of rest is, and its end ([count(rest)] unless rest is "")
		some k in array.concat(indexof_n(rest, "/"), array.slice([count(rest)], 0, count(rest)))
		_ = rules[substring(rest, 0, k)]
	]))
	key := object.get({-1: "."}, r, substring(rest, 0, r))
}

# METADATA
# description: The absolute path of rule key of the export mounted at mount (for messages).
# scope: document
rule_path(mount, ".") := mount

rule_path(mount, key) := concat("/", [trim_suffix(mount, "/"), key]) if key != "."

# METADATA
# description: The names of the groups whose members rule grants mode.
grantees(rule, mode) := {name |
	some name, granted in object.get(rule, "groups", {})
	granted in {mode, "rw"}
}

# METADATA
# description: |
#   Whether rule's owner clause grants mode to who (the token's identity) on
#   rest (a request relative to the export) under the rule with key key: the
#   first component below the rule must be who's uid (by: uid, the default)
#   or user name (by: user). The rule's own path is nobody's.
owner_grants(rule, key, rest, mode, who) if {
	rule.owner.mode in {mode, "rw"}
	split(_below(key, rest), "/")[0] == _owner_id(rule.owner, who)
}

_below(".", rest) := rest if rest != ""

_below(key, rest) := substring(rest, count(key) + 1, -1) if {
	key != "."
	count(rest) > count(key)
}

_owner_id(owner, who) := format_int(who.uid, 10) if object.get(owner, "by", "uid") == "uid"

_owner_id(owner, who) := who.user if owner.by == "user"
