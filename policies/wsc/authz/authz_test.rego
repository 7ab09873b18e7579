# METADATA
# description: |
#   Table-driven tests of data.wsc.authz.decision. Each case names its
#   scenario; the fixture data below mirrors policies/data but is owned by the
#   tests, so editing the site data never changes what these tests mean.
package wsc.authz_test

import data.wsc.authz

levels := {
	"viewer": {
		"submit": false, "view_others": true, "act_on_others": false,
		"max_systems": 0, "max_priority": 0, "default_priority": 0,
	},
	"member": {
		"submit": true, "view_others": true, "act_on_others": false,
		"max_systems": 4, "max_priority": 5, "default_priority": 3,
	},
	"admin": {
		"submit": true, "view_others": true, "act_on_others": true,
		"max_systems": 16, "max_priority": 10, "default_priority": 5,
	},
	"guest": {
		"submit": false, "view_others": false, "act_on_others": false,
		"max_systems": 0, "max_priority": 0, "default_priority": 0,
	},
}

# gids 3000..3019: twenty small groups, each owning one directory of /nfs/many.
many_gids := numbers.range(3000, 3019)

groups := object.union(
	{
		"2001": {"name": "ml-team", "default_level": "member", "users": {"1001": "admin"}},
		"2002": {"name": "vision", "default_level": "member", "users": {"1003": "viewer"}},
		"2003": {
			"name": "students", "default_level": "member",
			"limits": {"member": {"max_systems": 1, "max_priority": 2, "default_priority": 1}},
		},
		"2004": {"name": "datasets", "default_level": "viewer"},
		"2005": {"name": "broken", "default_level": "superuser"},
		"2006": {"name": "guests", "default_level": "guest"},
	},
	{format_int(g, 10): {"name": sprintf("g%d", [g]), "default_level": "member"} | some g in many_gids},
)

exports := {
	"/nfs/projects": {
		"name": "projects", "server": "nfs1", "export": "/srv/projects", "pvc": "nfs-projects",
		"rules": {
			"ml": {"groups": {"ml-team": "rw", "vision": "ro"}},
			"vision": {"groups": {"vision": "rw"}},
			"students": {"groups": {"students": "rw", "ml-team": "ro"}},
		},
	},
	"/nfs/datasets": {
		"name": "datasets", "server": "nfs2", "export": "/srv/datasets", "pvc": "nfs-datasets",
		"rules": {
			".": {"groups": {"datasets": "ro", "ml-team": "ro", "vision": "ro"}},
			"curated": {"groups": {"datasets": "rw"}},
		},
	},
	"/nfs/home": {
		"name": "home", "server": "nfs1", "export": "/srv/home", "pvc": "nfs-home",
		"rules": {".": {"owner": {"mode": "rw", "by": "uid"}}},
	},
	"/nfs/users": {
		"name": "users", "server": "nfs1", "export": "/srv/users", "pvc": "nfs-users",
		"rules": {".": {"owner": {"mode": "ro", "by": "user"}}},
	},
	"/nfs/scratch": {
		"name": "scratch", "server": "nfs3", "export": "/srv/scratch", "pvc": "nfs-scratch",
		"rules": {
			"team": {"groups": {"ml-team": "rw"}},
			"people": {"owner": {"mode": "rw"}},
		},
	},
	"/nfs/many": {
		"name": "many", "server": "nfs3", "export": "/srv/many", "pvc": "nfs-many",
		"rules": {sprintf("g%d", [g]): {"groups": {sprintf("g%d", [g]): "ro"}} | some g in many_gids},
	},
}

alice := {"uid": 1001, "gid": 1001, "groups": [2001, 2004], "user": "alice", "host": "login1", "realm": "wsc"}

bob := {"uid": 1002, "gid": 1002, "groups": [2001], "user": "bob", "host": "login1", "realm": "wsc"}

carol := {"uid": 1003, "gid": 1003, "groups": [2001, 2002, 2003, 2005, 9999], "user": "carol"}

dave := {"uid": 1004, "gid": 1004, "groups": [2002, 2006], "user": "dave"}

# erin is in ml-team and all twenty small groups.
erin := {"uid": 1005, "gid": 1005, "groups": array.concat([2001], many_gids), "user": "erin"}

submit(who, project, mounts) := {
	"identity": who, "action": "submit",
	"request": {"project": project, "mounts": mounts, "resources": {"systems": 1}},
}

with_request(base, extra) := object.union(base, {"request": object.union(base.request, extra)})

job_action(who, action, owner, project) := {
	"identity": who, "action": action,
	"request": {"job": {"owner_uid": owner, "project": project}},
}

ro(path) := {"path": path, "mode": "ro"}

rw(path) := {"path": path, "mode": "rw"}

# The mount a decision grants for path on export (pvc "nfs-<export>").
granted(path, export, sub_path, read_only) := {
	"path": path, "export": export, "pvc": concat("-", ["nfs", export]),
	"sub_path": sub_path, "read_only": read_only,
}

# The denial for a mount the longest rule does not grant.
no_access(path, mode, rule, export) := sprintf(
	"mount %q (%s): rule %q of export %q grants you no %s access",
	[path, mode, rule, export, mode],
)

not_admin(owner, project) := sprintf(
	"job of uid %d in project %q: acting on another user's job needs admin there, your level is \"member\"",
	[owner, project],
)

# A path under /nfs/datasets whose last component is n copies of "a" (sep "") or n components "a" (sep "/").
long_path(sep, n) := concat(sep, ["/nfs/datasets/", concat(sep, ["a" | some _ in numbers.range(1, n)])])

many_mounts(n) := [ro(sprintf("/nfs/many/g%d", [g])) | some g in numbers.range(3000, (3000 + n) - 1)]

# Every scenario, by name; each file adds one table.
cases := object.union_n([submit_cases, mount_cases, job_cases])

# Fields a denied decision must not carry: nothing the launcher could act on.
grant_fields := {"run_as", "supplemental_groups", "mounts", "visible_projects", "priority"}

_passes(tc, d) if {
	d.allow == object.get(tc, "allow", false)
	d.reasons == object.get(tc, "reasons", [])
	_grants_only_when_allowed(d)
	every field, want in object.get(tc, "expect", {}) {
		d[field] == want
	}
}

_grants_only_when_allowed(d) if d.allow

_grants_only_when_allowed(d) if {
	not d.allow
	every field in grant_fields {
		not field in object.keys(d)
	}
}

# On failure, `opa test -v --var-values` prints the names of the failing cases.
test_every_case_passes if {
	failing := {name |
		some name, tc in cases
		d := authz.decision with input as tc.input
			with data.wsc.groups as groups
			with data.wsc.levels as levels
			with data.wsc.exports as exports
		not _passes(tc, d)
	}
	count(failing) == 0
}

# allow is exactly "a rule permits the action and nothing denies it": on
# every case, an allowed decision has no denial and a denied one has one,
# except where no rule permits the action (the generic reason).
test_allowed_iff_no_denial if {
	inconsistent := {name |
		some name, tc in cases
		allowed := authz.allow with input as tc.input
			with data.wsc.groups as groups
			with data.wsc.levels as levels
			with data.wsc.exports as exports
		denials := authz.deny with input as tc.input
			with data.wsc.groups as groups
			with data.wsc.levels as levels
			with data.wsc.exports as exports
		allowed == count(denials) > 0
	}
	count(inconsistent) == 0
}

# The decision's allow, reasons and privileges are the package's documents of
# the same names (the allowed path builds them itself).
test_decision_agrees_with_its_documents if {
	disagreeing := {name |
		some name, tc in cases
		d := authz.decision with input as tc.input
			with data.wsc.groups as groups
			with data.wsc.levels as levels
			with data.wsc.exports as exports
		docs := {"allow": authz.allow, "reasons": authz.reasons, "privileges": authz.privileges} with input as tc.input
			with data.wsc.groups as groups
			with data.wsc.levels as levels
			with data.wsc.exports as exports
		docs != object.filter(d, ["allow", "reasons", "privileges"])
	}
	count(disagreeing) == 0
}

# A request no positive rule permits is denied even when no denial rule
# explains why (here: their messages are mocked away).
test_denied_without_a_permitting_rule if {
	d := authz.decision with input as job_action(bob, "cancel", 1001, "ml-team")
		with data.wsc.groups as groups
		with data.wsc.levels as levels
		with data.wsc.exports as exports
		with authz.deny as set()
	d.allow == false
	d.reasons == ["request denied: no rule permits it"]
}

test_a_root_export_serves_paths_no_other_export_covers if {
	root := {"/": {"name": "root", "server": "s", "export": "/srv", "pvc": "nfs-root", "rules": {
		".": {"groups": {"ml-team": "ro"}},
		"etc": {"groups": {}},
	}}}
	d := authz.decision with input as submit(bob, "ml-team", [ro("/opt/x"), ro("/"), ro("/etc/shadow")])
		with data.wsc.groups as groups
		with data.wsc.levels as levels
		with data.wsc.exports as object.union(exports, root)
	d.reasons == [`mount "/etc/shadow" (ro): rule "/etc" of export "root" grants you no ro access`]
}

test_a_root_export_mounts_paths_below_it if {
	rules := {".": {"groups": {"ml-team": "ro"}}}
	root := {"/": {"name": "root", "server": "s", "export": "/srv", "pvc": "nfs-root", "rules": rules}}
	d := authz.decision with input as submit(bob, "ml-team", [ro("/opt/x"), ro("/")])
		with data.wsc.groups as groups
		with data.wsc.levels as levels
		with data.wsc.exports as root
	d.mounts == [granted("/opt/x", "root", "opt/x", true), granted("/", "root", "", true)]
}

# A rule keyed "" (which the data check lets through) is no rule: not even for
# the export's own path, which only "." covers.
test_an_empty_rule_key_covers_nothing if {
	odd := {"/nfs/odd": {"name": "odd", "server": "s", "export": "/srv/odd", "pvc": "nfs-odd", "rules": {
		"": {"groups": {"ml-team": "ro"}},
		"a": {"groups": {"ml-team": "ro"}},
	}}}
	d := authz.decision with input as submit(bob, "ml-team", [ro("/nfs/odd"), ro("/nfs/odd/a/b")])
		with data.wsc.groups as groups
		with data.wsc.levels as levels
		with data.wsc.exports as odd
	d.reasons == [`mount "/nfs/odd": no rule of export "odd" covers it`]
}
