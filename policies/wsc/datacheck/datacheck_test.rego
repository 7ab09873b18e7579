package wsc.datacheck_test

import data.wsc.datacheck

test_shipped_data_is_valid if count(datacheck.errors) == 0

good_level := {
	"submit": true, "view_others": true, "act_on_others": false,
	"max_systems": 1, "max_priority": 1, "default_priority": 1,
}

test_every_problem_is_named if {
	found := datacheck.errors with data.wsc.levels as {"member": good_level, "bad": {"submit": "yes", "max_systems": -1}}
		with data.wsc.groups as {
			"2001": {"name": "ml", "default_level": "member", "users": {"0": "member", "1001": "boss"}},
			"2002": {"name": "ml", "default_level": "root", "limits": {"member": {"max_gpus": 2}, "boss": {}}},
			"x": {"name": "no spaces"},
		}
		with data.wsc.exports as {
			"/nfs/a/": {
				"name": "a", "server": "s", "export": "/e", "pvc": "p",
				"rules": {"/x": {}, ".": {"owner": {"mode": "rwx", "by": "gid"}}},
			},
			"/nfs/b": {
				"name": "a", "server": "", "export": "/e", "pvc": "p",
				"rules": {"x": {"groups": {"nobody": "ro", "ml": "w"}}},
			},
		}
	found == {
		`groups: key "x" is not a gid (a positive integer, quoted)`,
		"groups.x: name must match [A-Za-z0-9._-]+",
		`groups: name "ml" is used by more than one gid ["2001", "2002"]`,
		"groups.2002: default_level root is not a level",
		"groups.x: default_level null is not a level",
		`groups.2001.users: key "0" is not a uid (a positive integer, quoted)`,
		"groups.2001.users.1001: boss is not a level",
		`groups.2002.limits.member: not a level, or sets {"max_gpus"}`,
		`groups.2002.limits.boss: not a level, or sets {"anything"}`,
		"levels.bad.submit: must be true or false",
		"levels.bad.view_others: must be true or false",
		"levels.bad.act_on_others: must be true or false",
		"levels.bad.max_systems: must be an integer >= 0",
		"levels.bad.max_priority: must be an integer >= 0",
		"levels.bad.default_priority: must be an integer >= 0",
		`exports: key "/nfs/a/" is not a normalised absolute path`,
		"exports./nfs/b: server must be a non-empty string",
		`exports: name "a" is used more than once`,
		`exports./nfs/a/.rules: key "/x" is not '.' or a normalised relative path`,
		`exports./nfs/b.rules.x: grants to unknown group "nobody"`,
		"exports./nfs/b.rules.x: mode w is not ro or rw",
		"exports./nfs/a/.rules..: mode rwx is not ro or rw",
		"exports./nfs/a/.rules..: owner.by must be uid or user",
	}
}
