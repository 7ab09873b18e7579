# METADATA
# title: NFS export matching
# description: |
#   Maps one clean requested path to the export that serves it and the rule
#   that decides it. data.wsc.exports is keyed by the export's mount path and
#   each export's rules by their path relative to it, so a lookup probes only
#   the request's own ancestors: cost grows with the depth of the path, never
#   with the number of exports. Longest prefix wins, for the export and then
#   for the rule inside it.
package wsc.storage

import data.wsc.paths

# METADATA
# description: |
#   What decides clean path c, or undefined when no export covers it:
#   mount_path, the longest ancestor of c (c itself included; the root export
#   "/" is the shortest) that is an export's key; export, that entry of
#   data.wsc.exports; sub_path, c relative to mount_path ("" for the mount
#   itself); rule_key, the longest key of the export's rules covering
#   sub_path ("." covers everything, the export itself included), rule, that
#   rule, and rule_path, its absolute path. The three rule fields are null
#   when no rule covers sub_path.
lookup(c) := {
	"mount_path": mount_path,
	"export": export,
	"sub_path": sub_path,
	"rule_key": rule_key,
	"rule": object.get(rules, [rule_key], null),
	"rule_path": rule_path(mount_path, rule_key),
} if {
	exports := data.wsc.exports
	mounts := [a | some a in paths.ancestors(c); exports[a]]
	count(mounts) > 0
	mount_path := mounts[count(mounts) - 1]
	export := exports[mount_path]
	sub_path := trim_prefix(trim_prefix(c, mount_path), "/")
	rules := object.get(export, "rules", {})
	rule_key := _longest([key | some key in array.concat(["."], paths.below("", sub_path)); rules[key]])
}

# METADATA
# description: |
#   The absolute path of the rule with key key of the export mounted at
#   mount_path; null for no rule (key null).
# scope: document
rule_path(_, null) := null

rule_path(mount_path, ".") := mount_path

rule_path(mount_path, key) := concat("/", [trim_suffix(mount_path, "/"), key]) if not key in {".", null}

# METADATA
# description: Whether a rule granting mode granted allows mode wanted ("rw" implies "ro").
covers(granted, wanted) if granted in {wanted, "rw"}

# METADATA
# description: The names of the groups whose members rule grants mode.
grantees(rule, mode) := {name |
	some name, granted in rule.groups
	covers(granted, mode)
}

# METADATA
# description: |
#   The owner (who's uid as a decimal string, or user name) whose directory
#   target (from lookup) is in when its rule's owner clause grants mode: the
#   first component below the rule must be who's uid (by: uid, the default)
#   or user name (by: user). The rule's own path is nobody's. Undefined when
#   the clause does not grant it.
owner_grant(target, mode, who) := owner if {
	covers(target.rule.owner.mode, mode)
	owner := _owner_id(target.rule.owner, who)
	split(_below_rule(target.rule_key, target.sub_path), "/")[0] == owner
}

# The last of candidates (ordered shortest first), the longest match; null
# when there is none.
_longest([]) := null

_longest(candidates) := candidates[count(candidates) - 1] if count(candidates) > 0

# sub_path relative to the rule with key key; undefined for the rule's own path.
_below_rule(".", sub_path) := sub_path if sub_path != ""

_below_rule(key, sub_path) := trim_prefix(sub_path, prefix) if {
	key != "."
	prefix := concat("", [key, "/"])
	startswith(sub_path, prefix)
}

_owner_id(owner, who) := format_int(who.uid, 10) if object.get(owner, "by", "uid") == "uid"

_owner_id(owner, who) := who.user if owner.by == "user"
