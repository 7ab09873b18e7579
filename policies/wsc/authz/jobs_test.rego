package wsc.authz_test

# METADATA
# description: "Job actions (get, logs, cancel, set_priority), identity checks and unknown actions."
job_cases := {
	# --- job actions -----------------------------------------------------------------
	"A cannot act as B: bob cannot cancel alice's job": {
		"input": job_action(bob, "cancel", 1001, "ml-team"),
		"reasons": [not_admin(1001, "ml-team")],
	},
	"A cannot act as B: bob cannot re-prioritise alice's job": {
		"input": with_request(job_action(bob, "set_priority", 1001, "ml-team"), {"priority": 1}),
		"reasons": [not_admin(1001, "ml-team")],
	},
	"bob sees his own job": {
		"input": job_action(bob, "get", 1002, "ml-team"),
		"allow": true,
	},
	"bob cancels his own job": {
		"input": job_action(bob, "cancel", 1002, "ml-team"),
		"allow": true,
	},
	"an admin of the job's group cancels another member's job": {
		"input": job_action(alice, "cancel", 1002, "ml-team"),
		"allow": true,
	},
	"admin in one group is not admin in another": {
		"input": job_action(alice, "cancel", 1004, "vision"),
		"reasons": ["job of another user in a project you are not a member of"],
	},
	"a member sees other members' jobs": {
		"input": job_action(bob, "get", 1001, "ml-team"),
		"allow": true,
	},
	"a level without view_others cannot see others' jobs": {
		"input": job_action(dave, "get", 1001, "guests"),
		"reasons": [`job of uid 1001 in project "guests": level "guest" may not see other members' jobs`],
	},
	"outsiders cannot see a job": {
		"input": job_action(dave, "get", 1001, "ml-team"),
		"reasons": ["job of another user in a project you are not a member of"],
	},
	"the owner reads their job's output": {
		"input": job_action(bob, "logs", 1002, "ml-team"),
		"allow": true,
		"expect": {"privileges": {"ml-team": "member"}},
	},
	"an owner who left the project still reads their job's output": {
		"input": job_action(bob, "logs", 1002, "vision"),
		"allow": true,
	},
	"a viewer reads the output of another member's job": {
		"input": job_action(carol, "logs", 1004, "vision"),
		"allow": true,
	},
	"a level without view_others cannot read others' output": {
		"input": job_action(dave, "logs", 1001, "guests"),
		"reasons": [`job of uid 1001 in project "guests": level "guest" may not see other members' jobs`],
	},
	"outsiders cannot read a job's output": {
		"input": job_action(dave, "logs", 1001, "ml-team"),
		"reasons": ["job of another user in a project you are not a member of"],
	},
	"reading output needs the job's owner and project": {
		"input": {"identity": bob, "action": "logs", "request": {"job": {"project": "ml-team"}}},
		"reasons": ["request.job: needs owner_uid (integer) and project (string)"],
	},
	"a job needs its owner and project": {
		"input": {"identity": bob, "action": "get", "request": {"job": {"owner_uid": "1002"}}},
		"reasons": ["request.job: needs owner_uid (integer) and project (string)"],
	},
	"an admin sets priority up to the admin ceiling": {
		"input": with_request(job_action(alice, "set_priority", 1002, "ml-team"), {"priority": 10}),
		"allow": true,
		"expect": {"priority": 10},
	},
	"an owner's priority is held to the owner's ceiling": {
		"input": with_request(job_action(bob, "set_priority", 1002, "ml-team"), {"priority": 7}),
		"reasons": [`project "ml-team": priority 7 exceeds the ceiling 5 of level "member"`],
	},
	"set_priority needs a priority": {
		"input": job_action(bob, "set_priority", 1002, "ml-team"),
		"reasons": ["request.priority: must be an integer >= 0"],
	},
	"an owner who left the project cannot re-prioritise": {
		"input": with_request(job_action(bob, "set_priority", 1002, "vision"), {"priority": 1}),
		"reasons": [`project "vision": setting a priority needs membership in the job's project`],
	},
	# --- identity and action -----------------------------------------------------------
	"uid 0 is never allowed": {
		"input": {"identity": object.union(bob, {"uid": 0}), "action": "list"},
		"reasons": ["identity: uid 0 (root) is never allowed"],
		"expect": {"privileges": {}},
	},
	"gid 0 is never allowed": {
		"input": {"identity": object.union(bob, {"gid": 0}), "action": "list"},
		"reasons": ["identity: gid 0 (root group) is never allowed"],
	},
	"group 0 is never allowed": {
		"input": {"identity": object.union(bob, {"groups": [0, 2001]}), "action": "list"},
		"reasons": ["identity: gid 0 (root group) is never allowed"],
	},
	"ids must be integers": {
		"input": {"identity": object.union(bob, {"uid": "1002", "gid": -1, "groups": "2001"}), "action": "list"},
		"reasons": [
			"identity: gid must be an integer in [1, 4294967294]",
			"identity: groups must be a list of at most 1024 gids",
			"identity: uid must be an integer in [1, 4294967294]",
		],
	},
	"at most 1024 groups": {
		"input": {"identity": object.union(bob, {"groups": numbers.range(5000, 6024)}), "action": "list"},
		"reasons": ["identity: groups must be a list of at most 1024 gids"],
	},
	"ids written as 1002.0 or 2.001e3 are the same integers": {
		"input": {"identity": object.union(bob, {"uid": 1002.0, "groups": [2.001e3]}), "action": "list"},
		"allow": true,
		"expect": {"privileges": {"ml-team": "member"}, "visible_projects": ["ml-team"]},
	},
	"a malformed uid gives no memberships": {
		"input": submit(object.union(bob, {"uid": "1002"}), "ml-team", []),
		"reasons": [
			"identity: uid must be an integer in [1, 4294967294]",
			`project "ml-team": not one of your groups`,
		],
		"expect": {"privileges": {}},
	},
	"a fractional uid is denied": {
		"input": {"identity": object.union(bob, {"uid": 1002.5}), "action": "list"},
		"reasons": ["identity: uid must be an integer in [1, 4294967294]"],
	},
	"1024 groups are the most (max_identity_groups)": {
		"input": {"identity": object.union(bob, {"groups": numbers.range(5001, 6024)}), "action": "list"},
		"allow": true,
	},
	"unknown gids give no privileges": {
		"input": {"identity": object.union(bob, {"groups": [2001, 77777]}), "action": "list"},
		"allow": true,
		"expect": {"privileges": {"ml-team": "member"}, "visible_projects": ["ml-team"]},
	},
	"unknown actions are denied": {
		"input": {"identity": bob, "action": "delete"},
		"reasons": ["action delete: not one of cancel, get, list, logs, set_priority, submit"],
	},
	"a missing action is denied": {
		"input": {"identity": bob},
		"reasons": ["action null: not one of cancel, get, list, logs, set_priority, submit"],
	},
}
