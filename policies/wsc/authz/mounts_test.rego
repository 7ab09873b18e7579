package wsc.authz_test

# METADATA
# description: "Submit - NFS mounts, path normalisation and traversal, the 16-group cap."
mount_cases := {
	# --- submit: mounts --------------------------------------------------------------
	"mounts must be a list": {
		"input": with_request(submit(bob, "ml-team", []), {"mounts": "/nfs/projects/ml"}),
		"reasons": ["request.mounts: must be a list of at most 32 mounts"],
	},
	"at most 32 mounts": {
		"input": submit(bob, "ml-team", [ro("/nfs/datasets") | some _ in numbers.range(1, 33)]),
		"reasons": [
			`mount "/nfs/datasets": requested more than once`,
			"request.mounts: must be a list of at most 32 mounts",
		],
	},
	"32 mounts are the most (max_mounts)": {
		"input": submit(bob, "ml-team", [rw(sprintf("/nfs/home/1002/d%d", [n])) | some n in numbers.range(1, 32)]),
		"allow": true,
	},
	"the same path twice is denied": {
		"input": submit(bob, "ml-team", [ro("/nfs/datasets/a"), rw("/nfs/datasets/./a/")]),
		"reasons": [
			`mount "/nfs/datasets/a" (rw): rule "/nfs/datasets" of export "datasets" grants you no rw access`,
			`mount "/nfs/datasets/a": requested more than once`,
		],
	},
	"a mount must be an object": {
		"input": submit(bob, "ml-team", ["/nfs/datasets"]),
		"reasons": ["mount /nfs/datasets: must be {path, mode}"],
	},
	"a mount must have a path": {
		"input": submit(bob, "ml-team", [{"mode": "ro"}]),
		"reasons": [`mount {"mode": "ro"}: path is missing`],
	},
	"a mount's mode is ro or rw": {
		"input": submit(bob, "ml-team", [{"path": "/nfs/datasets", "mode": "rwx"}, {"path": "/nfs/datasets/b"}]),
		"reasons": [
			`mount "/nfs/datasets": mode must be "ro" or "rw"`,
			`mount "/nfs/datasets/b": mode must be "ro" or "rw"`,
		],
	},
	"a missing identity is denied": {
		"input": {"action": "list"},
		"reasons": [
			"identity: gid must be an integer in [1, 4294967294]",
			"identity: groups must be a list of at most 1024 gids",
			"identity: uid must be an integer in [1, 4294967294]",
		],
	},
	"a path outside every export is denied": {
		"input": submit(bob, "ml-team", [ro("/etc/passwd")]),
		"reasons": [`mount "/etc/passwd": outside every NFS export`],
	},
	"a prefix of an export's path is not inside it": {
		"input": submit(bob, "ml-team", [ro("/nfs/datasetsX/a")]),
		"reasons": [`mount "/nfs/datasetsX/a": outside every NFS export`],
	},
	"a path no rule of its export covers is denied": {
		"input": submit(bob, "ml-team", [rw("/nfs/scratch/other"), rw("/nfs/scratch/team/x")]),
		"reasons": [`mount "/nfs/scratch/other": no rule of export "scratch" covers it`],
	},
	"rw needs an rw grant": {
		"input": submit(dave, "vision", [rw("/nfs/projects/ml/weights")]),
		"reasons": [no_access("/nfs/projects/ml/weights", "rw", "/nfs/projects/ml", "projects")],
	},
	"the longest rule wins over a broader one": {
		"input": submit(bob, "ml-team", [rw("/nfs/datasets/curated/x")]),
		"reasons": [no_access("/nfs/datasets/curated/x", "rw", "/nfs/datasets/curated", "datasets")],
	},
	"home directories belong to their uid": {
		"input": submit(bob, "ml-team", [ro("/nfs/home/1001/secrets"), ro("/nfs/home")]),
		"reasons": [
			`mount "/nfs/home" (ro): rule "/nfs/home" of export "home" grants you no ro access`,
			`mount "/nfs/home/1001/secrets" (ro): rule "/nfs/home" of export "home" grants you no ro access`,
		],
	},
	"an owner rule below an export's root gives each user a directory under the rule": {
		"input": submit(bob, "ml-team", [rw("/nfs/scratch/people/1002/x"), ro("/nfs/scratch/people/1002")]),
		"allow": true,
		"expect": {
			"supplemental_groups": [2001],
			"mounts": [
				granted("/nfs/scratch/people/1002/x", "scratch", "people/1002/x", false),
				granted("/nfs/scratch/people/1002", "scratch", "people/1002", true),
			],
		},
	},
	"an owner rule's own path and other users' directories under it are denied": {
		"input": submit(bob, "ml-team", [ro("/nfs/scratch/people"), ro("/nfs/scratch/people/1001/x")]),
		"reasons": [
			no_access("/nfs/scratch/people", "ro", "/nfs/scratch/people", "scratch"),
			no_access("/nfs/scratch/people/1001/x", "ro", "/nfs/scratch/people", "scratch"),
		],
	},
	"owner rules by user name follow the token's user": {
		"input": submit(bob, "ml-team", [ro("/nfs/users/bob/x"), rw("/nfs/users/bob/y"), ro("/nfs/users/alice")]),
		"reasons": [
			`mount "/nfs/users/alice" (ro): rule "/nfs/users" of export "users" grants you no ro access`,
			`mount "/nfs/users/bob/y" (rw): rule "/nfs/users" of export "users" grants you no rw access`,
		],
	},
	# --- submit: traversal and encodings ------------------------------------------------
	"'.', '//' and a trailing '/' are normalised away": {
		"input": submit(bob, "ml-team", [rw("//nfs//projects/./ml/data/")]),
		"allow": true,
		"expect": {"mounts": [granted("/nfs/projects/ml/data", "projects", "ml/data", false)]},
	},
	"'..' inside an export resolves before matching": {
		"input": submit(dave, "vision", [rw("/nfs/projects/vision/../ml/x")]),
		"reasons": [`mount "/nfs/projects/ml/x" (rw): rule "/nfs/projects/ml" of export "projects" grants you no rw access`],
	},
	"a '..' path is judged, and mounted, as the path it resolves to": {
		"input": submit(bob, "ml-team", [rw("/nfs/projects/vision/../ml/x/")]),
		"allow": true,
		"expect": {
			"supplemental_groups": [2001],
			"mounts": [granted("/nfs/projects/ml/x", "projects", "ml/x", false)],
		},
	},
	"'..' out of every export lands outside": {
		"input": submit(bob, "ml-team", [ro("/nfs/projects/ml/../../../etc/shadow")]),
		"reasons": [`mount "/etc/shadow": outside every NFS export`],
	},
	"'..' above / is denied": {
		"input": submit(bob, "ml-team", [ro("/nfs/../../etc/shadow")]),
		"reasons": [`mount "/nfs/../../etc/shadow": climbs above / with '..'`],
	},
	"percent-encoding is refused, not decoded": {
		"input": submit(bob, "ml-team", [ro("/nfs/projects/ml/%2e%2e/vision")]),
		"reasons": [`mount "/nfs/projects/ml/%2e%2e/vision": contains '%' (percent-encoding is refused, not decoded)`],
	},
	"unicode look-alikes of '.' and '/' are refused": {
		"input": submit(bob, "ml-team", [ro("/nfs/projects/ml/\u2025/vision"), ro("/nfs/projects/ml\uff0f..\uff0fvision")]),
		"reasons": [
			`mount "/nfs/projects/ml/‥/vision": contains non-ASCII characters (unicode look-alikes are refused)`,
			`mount "/nfs/projects/ml／..／vision": contains non-ASCII characters (unicode look-alikes are refused)`,
		],
	},
	"backslashes, spaces and NUL are refused": {
		"input": submit(bob, "ml-team", [ro(`/nfs/projects/ml\..\vision`), ro("/nfs/projects/ml x"), ro("/nfs/a\u0000")]),
		"reasons": [
			`mount "/nfs/a\x00": contains characters outside [A-Za-z0-9._@+,=/-]`,
			`mount "/nfs/projects/ml x": contains characters outside [A-Za-z0-9._@+,=/-]`,
			`mount "/nfs/projects/ml\\..\\vision": contains characters outside [A-Za-z0-9._@+,=/-]`,
		],
	},
	"relative paths are refused": {
		"input": submit(bob, "ml-team", [ro("nfs/datasets")]),
		"reasons": [`mount "nfs/datasets": is not absolute`],
	},
	"a path must be a string": {
		"input": submit(bob, "ml-team", [{"path": 7, "mode": "ro"}]),
		"reasons": ["mount 7: path is not a string"],
	},
	"over-long paths are refused": {
		"input": submit(bob, "ml-team", [ro(long_path("", 1020))]),
		"reasons": [sprintf("mount %q: is longer than 1024 bytes", [long_path("", 1020)])],
	},
	"too many components are refused": {
		"input": submit(bob, "ml-team", [ro(long_path("/", 63))]),
		"reasons": [sprintf("mount %q: has more than 64 components", [long_path("/", 63)])],
	},
	"over-long components are refused": {
		"input": submit(bob, "ml-team", [ro(long_path("", 256))]),
		"reasons": [sprintf("mount %q: has a component longer than 255 bytes", [long_path("", 256)])],
	},
	# --- submit: the 16-group cap ----------------------------------------------------
	"project plus 15 mount groups fits in 16": {
		"input": submit(erin, "ml-team", many_mounts(15)),
		"allow": true,
		"expect": {"supplemental_groups": array.concat([2001], numbers.range(3000, 3014))},
	},
	"a 17th supplementary group is denied": {
		"input": submit(erin, "ml-team", many_mounts(16)),
		"reasons": ["job needs 17 supplementary groups (project + mounts); NFS AUTH_SYS carries at most 16"],
	},
}
