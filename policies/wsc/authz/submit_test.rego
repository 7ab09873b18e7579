package wsc.authz_test

# METADATA
# description: "Submit - project groups, levels and their limits."
submit_cases := {
	# --- submit: groups and levels -------------------------------------------------
	"alice submits to ml-team with project, dataset and home mounts": {
		"input": submit(alice, "ml-team", [
			rw("/nfs/projects/ml/data"),
			ro("/nfs/datasets/imagenet/"),
			rw("/nfs/home/1001/runs"),
		]),
		"allow": true,
		"expect": {
			"run_as": {"uid": 1001, "gid": 2001},
			"supplemental_groups": [2001],
			"priority": 5,
			"privileges": {"ml-team": "admin", "datasets": "viewer"},
			"mounts": [
				granted("/nfs/projects/ml/data", "projects", "ml/data", false),
				granted("/nfs/datasets/imagenet", "datasets", "imagenet", true),
				granted("/nfs/home/1001/runs", "home", "1001/runs", false),
			],
		},
	},
	"a mount granted through another group adds that group's gid": {
		"input": submit(carol, "students", [ro("/nfs/projects/vision/x")]),
		"allow": true,
		"expect": {"run_as": {"uid": 1003, "gid": 2003}, "supplemental_groups": [2002, 2003], "priority": 1},
	},
	"a mount several groups grant needs only the lowest gid": {
		"input": submit(carol, "students", [ro("/nfs/projects/ml/x")]),
		"allow": true,
		"expect": {"supplemental_groups": [2001, 2003]},
	},
	"a mount the project group grants needs no other gid": {
		"input": submit(bob, "ml-team", [ro("/nfs/projects/students/shared")]),
		"allow": true,
		"expect": {"supplemental_groups": [2001]},
	},
	"an export root itself can be mounted (empty sub_path)": {
		"input": submit(bob, "ml-team", [ro("/nfs/datasets")]),
		"allow": true,
		"expect": {"mounts": [granted("/nfs/datasets", "datasets", "", true)]},
	},
	"carol, in several groups, gets each at its own level": {
		"input": {"identity": carol, "action": "list", "request": {}},
		"allow": true,
		"expect": {
			"privileges": {"ml-team": "member", "vision": "viewer", "students": "member"},
			"visible_projects": ["ml-team", "students", "vision"],
		},
	},
	"carol may submit as a member of students but not as a viewer of vision": {
		"input": submit(carol, "vision", []),
		"reasons": [`project "vision": level "viewer" may not submit jobs`],
	},
	"a group's own limits lower its members' ceiling": {
		"input": with_request(submit(carol, "students", []), {"resources": {"systems": 2}, "priority": 3}),
		"reasons": [
			`project "students": 2 systems requested, level "member" allows at most 1`,
			`project "students": priority 3 exceeds the ceiling 2 of level "member"`,
		],
	},
	"bob cannot charge a job to a group he is not in": {
		"input": submit(bob, "vision", []),
		"reasons": [`project "vision": not one of your groups`],
	},
	"a group whose level is not defined gives no privileges": {
		"input": submit(carol, "broken", []),
		"reasons": [`project "broken": not one of your groups`],
	},
	"the project must be named": {
		"input": {"identity": bob, "action": "submit", "request": {}},
		"reasons": ["request.project: must name one of your groups"],
	},
	"an explicit priority within the ceiling is kept": {
		"input": with_request(submit(bob, "ml-team", []), {"priority": 5}),
		"allow": true,
		"expect": {"priority": 5},
	},
	"a priority above the ceiling is denied": {
		"input": with_request(submit(bob, "ml-team", []), {"priority": 9}),
		"reasons": [`project "ml-team": priority 9 exceeds the ceiling 5 of level "member"`],
	},
	"a negative priority is denied": {
		"input": with_request(submit(bob, "ml-team", []), {"priority": -1}),
		"reasons": ["request.priority: must be an integer >= 0"],
	},
	"zero systems is denied": {
		"input": with_request(submit(bob, "ml-team", []), {"resources": {"systems": 0}}),
		"reasons": ["request.resources.systems: must be an integer >= 1"],
	},
	"fractional systems is denied": {
		"input": with_request(submit(bob, "ml-team", []), {"resources": {"systems": 1.5}}),
		"reasons": ["request.resources.systems: must be an integer >= 1"],
	},
	"every denied part is reported and denies the whole request": {
		"input": with_request(submit(bob, "vision", [rw("/etc/shadow"), ro("/nfs/home/1001")]), {"priority": -2}),
		"reasons": [
			`mount "/etc/shadow": outside every NFS export`,
			`mount "/nfs/home/1001" (ro): rule "/nfs/home" of export "home" grants you no ro access`,
			`project "vision": not one of your groups`,
			"request.priority: must be an integer >= 0",
		],
		"expect": {"privileges": {"ml-team": "member"}},
	},
}
