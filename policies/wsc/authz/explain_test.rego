package wsc.authz_test

import data.wsc.authz

# METADATA
# description: |
#   data.wsc.authz.explanation, by scenario: each case lists the parts of the
#   explanation it pins down (object.subset: fields not named are not
#   checked) and, under mounts, the parts of each mount's entry by index.
explain_cases := {
	"a submit explains each grant: project group, owner, another group": {
		"input": submit(carol, "students", [
			ro("/nfs/projects/vision/x"),
			rw("/nfs/home/1003/a"),
			rw("/nfs/projects/students/y"),
		]),
		"expect": {
			"allow": true,
			"reasons": [],
			"action": {"name": "submit", "known": true, "permitted": true},
			"identity": {"valid": true, "problems": []},
			"project": {
				"named": "students",
				"may_submit": true,
				"membership": {"gid": 2003, "group": "students", "level": "member", "level_from": "default"},
			},
			"job": null,
			"limits": {
				"max_supplemental_groups": {"max": 16, "value": 2, "exceeded": false, "set_by": "policy"},
				"max_mounts": {"max": 32, "value": 3, "exceeded": false, "set_by": "policy"},
				"max_systems": {
					"max": 1, "value": 1, "exceeded": false,
					"set_by": "group_limits", "group": "students", "level": "member",
				},
				"max_priority": {"max": 2, "value": 1, "exceeded": false, "set_by": "group_limits"},
			},
		},
		"mounts": {
			0: {
				"path": "/nfs/projects/vision/x",
				"export": {"name": "projects", "mount_path": "/nfs/projects", "pvc": "nfs-projects"},
				"sub_path": "vision/x",
				"rule": {"key": "vision", "path": "/nfs/projects/vision", "groups": {"vision": "rw"}, "owner": null},
				"grant": {"by": "group", "group": "vision", "gid": 2002},
				"read_only": true,
				"refusal": null,
			},
			1: {
				"rule": {"key": ".", "path": "/nfs/home", "owner": {"mode": "rw", "by": "uid"}},
				"grant": {"by": "owner", "owner": "1003"},
				"read_only": false,
			},
			2: {"grant": {"by": "project", "group": "students", "gid": 2003}},
		},
	},
	"memberships name the group entry and where each level comes from": {
		"input": {"identity": alice, "action": "list", "request": {}},
		"expect": {
			"allow": true,
			"project": null,
			"job": null,
			"mounts": [],
			"memberships": [
				{
					"gid": 2001, "group": "ml-team", "level": "admin", "level_from": "user", "group_limits": {},
					"rights": levels.admin,
				},
				{
					"gid": 2004, "group": "datasets", "level": "viewer", "level_from": "default", "group_limits": {},
					"rights": levels.viewer,
				},
			],
		},
	},
	"a refused mount names the rule, or says none covers it, or why it is malformed": {
		"input": submit(bob, "ml-team", [
			rw("/nfs/datasets/curated/x"),
			ro("/etc/passwd"),
			ro("/nfs/scratch/other"),
			ro("/nfs/a%2e"),
		]),
		"expect": {"allow": false, "action": {"permitted": true}},
		"mounts": {
			0: {
				"export": {"name": "datasets"},
				"rule": {"key": "curated", "path": "/nfs/datasets/curated", "groups": {"datasets": "rw"}},
				"grant": null,
				"read_only": null,
				"refusal": no_access("/nfs/datasets/curated/x", "rw", "/nfs/datasets/curated", "datasets"),
			},
			1: {
				"path": "/etc/passwd", "export": null, "sub_path": null, "rule": null,
				"refusal": `mount "/etc/passwd": outside every NFS export`,
			},
			2: {
				"export": {"name": "scratch"}, "sub_path": "other", "rule": null,
				"refusal": `mount "/nfs/scratch/other": no rule of export "scratch" covers it`,
			},
			3: {
				"path": null, "export": null, "grant": null,
				"refusal": `mount "/nfs/a%2e": contains '%' (percent-encoding is refused, not decoded)`,
			},
		},
	},
	"the 16-group cap is the limit hit": {
		"input": submit(erin, "ml-team", many_mounts(16)),
		"expect": {
			"allow": false,
			"limits": {"max_supplemental_groups": {"max": 16, "value": 17, "exceeded": true, "set_by": "policy"}},
		},
	},
	"a level's ceiling is the limit hit, set by the level": {
		"input": with_request(submit(bob, "ml-team", []), {"priority": 9, "resources": {"systems": 5}}),
		"expect": {"limits": {
			"max_priority": {
				"max": 5, "value": 9, "exceeded": true,
				"set_by": "level", "group": "ml-team", "level": "member",
			},
			"max_systems": {"max": 4, "value": 5, "exceeded": true, "set_by": "level"},
		}},
	},
	"too many mounts is the limit hit": {
		"input": submit(bob, "ml-team", [ro("/nfs/datasets") | some _ in numbers.range(1, 33)]),
		"expect": {"limits": {"max_mounts": {"max": 32, "value": 33, "exceeded": true}}},
	},
	"a project the caller is not in has no membership and no level limits": {
		"input": submit(bob, "vision", []),
		"expect": {
			"action": {"permitted": false},
			"project": {"named": "vision", "membership": null, "may_submit": false},
			"limits": {
				"max_mounts": {"max": 32, "value": 0, "exceeded": false, "set_by": "policy"},
				"max_supplemental_groups": {"max": 16, "value": 1, "exceeded": false, "set_by": "policy"},
				"max_identity_groups": {"max": 1024, "value": 1, "exceeded": false, "set_by": "policy"},
			},
		},
		"exact": ["limits"],
	},
	"an oversized or root identity is explained as invalid": {
		"input": {"identity": object.union(bob, {"uid": 0, "groups": numbers.range(5000, 6024)}), "action": "list"},
		"expect": {
			"allow": false,
			"action": {"permitted": true},
			"identity": {"valid": false, "problems": [
				"identity: groups must be a list of at most 1024 gids",
				"identity: uid 0 (root) is never allowed",
			]},
			"limits": {"max_identity_groups": {"max": 1024, "value": 1025, "exceeded": true}},
		},
	},
	"your own job is yours": {
		"input": job_action(bob, "cancel", 1002, "ml-team"),
		"expect": {"job": {
			"owner_uid": 1002, "project": "ml-team", "own": true,
			"membership": {"group": "ml-team", "level": "member"},
			"right_needed": "act_on_others", "permitted_by": "owner",
		}},
	},
	"another member's job needs the level's right": {
		"input": job_action(alice, "cancel", 1002, "ml-team"),
		"expect": {"allow": true, "job": {"own": false, "permitted_by": "level", "membership": {"level": "admin"}}},
	},
	"without the right nothing permits it": {
		"input": job_action(dave, "get", 1001, "ml-team"),
		"expect": {
			"allow": false,
			"project": null,
			"mounts": [],
			"job": {"own": false, "membership": null, "right_needed": "view_others", "permitted_by": null},
		},
	},
	"reading another member's output needs view_others, which a viewer has": {
		"input": job_action(carol, "logs", 1004, "vision"),
		"expect": {
			"allow": true,
			"action": {"name": "logs", "known": true, "permitted": true},
			"job": {"own": false, "membership": {"level": "viewer"}, "right_needed": "view_others", "permitted_by": "level"},
		},
	},
	"set_priority is held to the ceiling in the job's project": {
		"input": with_request(job_action(alice, "set_priority", 1002, "ml-team"), {"priority": 11}),
		"expect": {"limits": {"max_priority": {
			"max": 10, "value": 11, "exceeded": true,
			"set_by": "level", "group": "ml-team", "level": "admin",
		}}},
	},
	"an unknown action is not known": {
		"input": {"identity": bob, "action": "delete"},
		"expect": {"action": {"name": "delete", "known": false, "permitted": false}, "job": null, "project": null},
	},
}

_explained(tc, e) if {
	object.subset(e, tc.expect)
	every field in object.get(tc, "exact", []) {
		e[field] == tc.expect[field]
	}
	every i, want in object.get(tc, "mounts", {}) {
		object.subset(e.mounts[i], want)
		e.mounts[i].index == i
		e.mounts[i].request == tc.input.request.mounts[i]
	}
}

# On failure, `opa test -v --var-values` prints the names of the failing cases.
test_every_explanation_case_passes if {
	failing := {name |
		some name, tc in explain_cases
		e := authz.explanation with input as tc.input
			with data.wsc.groups as groups
			with data.wsc.levels as levels
			with data.wsc.exports as exports
		not _explained(tc, e)
	}
	count(failing) == 0
}

# The explanation's allow and reasons are the decision's, on every decision case.
test_explanation_agrees_with_the_decision if {
	disagreeing := {name |
		some name, tc in cases
		d := authz.decision with input as tc.input
			with data.wsc.groups as groups
			with data.wsc.levels as levels
			with data.wsc.exports as exports
		e := authz.explanation with input as tc.input
			with data.wsc.groups as groups
			with data.wsc.levels as levels
			with data.wsc.exports as exports
		[d.allow, d.reasons] != [e.allow, e.reasons]
	}
	count(disagreeing) == 0
}
