# METADATA
# title: Admin data check
# description: |
#   Validates policies/data (data.wsc.groups, data.wsc.levels,
#   data.wsc.exports) against the schema in docs/policy.md. Not used by the
#   decision (it scans everything): `make policy-test` asserts the shipped data
#   is clean and `make bundle` refuses to build a bundle that is not.
package wsc.datacheck

import data.wsc.paths

# METADATA
# description: One message per problem in the admin data; empty when the data is valid.
# scope: document
errors contains sprintf("groups: key %q is not a gid (a positive integer, quoted)", [key]) if {
	some key, _ in data.wsc.groups
	not regex.match(`^[1-9][0-9]{0,9}$`, key)
}

errors contains sprintf("groups.%s: name must match [A-Za-z0-9._-]+", [key]) if {
	some key, group in data.wsc.groups
	not regex.match(`^[A-Za-z0-9._-]+$`, object.get(group, "name", ""))
}

errors contains sprintf("groups: name %q is used by more than one gid %v", [name, gids]) if {
	some name in {group.name | some group in data.wsc.groups}
	gids := sort([key | some key, group in data.wsc.groups; group.name == name])
	count(gids) > 1
}

errors contains sprintf("groups.%s: default_level %v is not a level", [key, level]) if {
	some key, group in data.wsc.groups
	level := object.get(group, "default_level", null)
	not _is_level(level)
}

errors contains sprintf("groups.%s.users: key %q is not a uid (a positive integer, quoted)", [key, uid]) if {
	some key, group in data.wsc.groups
	some uid, _ in object.get(group, "users", {})
	not regex.match(`^[1-9][0-9]{0,9}$`, uid)
}

errors contains sprintf("groups.%s.users.%s: %v is not a level", [key, uid, level]) if {
	some key, group in data.wsc.groups
	some uid, level in object.get(group, "users", {})
	not _is_level(level)
}

errors contains sprintf("groups.%s.limits.%s: not a level, or sets %v", [key, level, unknown]) if {
	some key, group in data.wsc.groups
	some level, limits in object.get(group, "limits", {})
	unknown := {k | some k, _ in limits; not k in _numbers} | {k | not _is_level(level); k := "anything"}
	count(unknown) > 0
}

errors contains sprintf("levels.%s.%s: must be true or false", [name, field]) if {
	some name, level in data.wsc.levels
	some field in _booleans
	not is_boolean(object.get(level, field, null))
}

errors contains sprintf("levels.%s.%s: must be an integer >= 0", [name, field]) if {
	some name, level in data.wsc.levels
	some field in _numbers
	not _count(object.get(level, field, null))
}

errors contains sprintf("exports: key %q is not a normalised absolute path", [key]) if {
	some key, _ in data.wsc.exports
	not _normalised(key)
}

errors contains sprintf("exports.%s: %s must be a non-empty string", [key, field]) if {
	some key, spec in data.wsc.exports
	some field in ["name", "server", "export", "pvc"]
	not _text(object.get(spec, field, null))
}

errors contains sprintf("exports: name %q is used more than once", [name]) if {
	some name in {spec.name | some spec in data.wsc.exports}
	count([key | some key, spec in data.wsc.exports; spec.name == name]) > 1
}

errors contains sprintf("exports.%s.rules: key %q is not '.' or a normalised relative path", [key, rule]) if {
	some key, spec in data.wsc.exports
	some rule, _ in object.get(spec, "rules", {})
	rule != "."
	not _normalised(concat("/", ["", rule]))
}

errors contains sprintf("exports.%s.rules.%s: grants to unknown group %q", [key, rule, name]) if {
	some key, spec in data.wsc.exports
	some rule, body in object.get(spec, "rules", {})
	some name, _ in object.get(body, "groups", {})
	not name in {group.name | some group in data.wsc.groups}
}

errors contains sprintf("exports.%s.rules.%s: mode %v is not ro or rw", [key, rule, mode]) if {
	some key, spec in data.wsc.exports
	some rule, body in object.get(spec, "rules", {})
	some mode in array.concat([m | some m in object.get(body, "groups", {})], [m | m := body.owner.mode])
	not mode in {"ro", "rw"}
}

errors contains sprintf("exports.%s.rules.%s: owner.by must be uid or user", [key, rule]) if {
	some key, spec in data.wsc.exports
	some rule, body in object.get(spec, "rules", {})
	not object.get(body.owner, "by", "uid") in {"uid", "user"}
}

_booleans := ["submit", "view_others", "act_on_others"]

_numbers := {"max_systems", "max_priority", "default_priority"}

_is_level(name) if data.wsc.levels[name]

_count(n) if {
	is_number(n)
	n >= 0
	floor(n) == n
}

_text(s) if {
	is_string(s)
	s != ""
}

_normalised(p) if {
	not paths.problem(p)
	paths.normalise(p) == p
}
