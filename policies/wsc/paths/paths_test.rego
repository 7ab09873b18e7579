package wsc.paths_test

import data.wsc.paths

test_problem_names_the_first_thing_wrong if {
	paths.problem(7) == "is not a string"
	paths.problem("/a/../..") == "climbs above / with '..'"
	paths.problem("nfs/a") == "is not absolute"
	not paths.problem("/a/b/../../c")
	not paths.problem("/")
}

test_normalise if {
	every p, want in {
		"/nfs/a/b": "/nfs/a/b",
		"/nfs//a/./b/": "/nfs/a/b",
		"/nfs/a/../b": "/nfs/b",
		"/nfs/...hidden/.x/..y": "/nfs/...hidden/.x/..y",
		"/": "/",
		"/.": "/",
		"/a/..": "/",
	} {
		paths.normalise(p) == want
	}
}

test_ancestors_are_listed_shortest_first if {
	every c, want in {
		"/a/bc/d": ["/", "/a", "/a/bc", "/a/bc/d"],
		"/": ["/"],
	} {
		paths.ancestors(c) == want
	}
}

test_below_lists_the_paths_under_an_ancestor if {
	every tc in [
		{"a": "/a", "c": "/a/b/c", "want": ["/a/b", "/a/b/c"]},
		{"a": "/a", "c": "/a", "want": []},
		{"a": "", "c": "x/y", "want": ["x", "x/y"]},
		{"a": "", "c": "", "want": []},
	] {
		paths.below(tc.a, tc.c) == tc.want
	}
}

test_problem_names_each_limit if {
	every p, want in {
		concat("", ["/", concat("", ["a" | some _ in numbers.range(1, 256)])]): "has a component longer than 255 bytes",
		concat("", ["/a" | some _ in numbers.range(1, 65)]): "has more than 64 components",
		concat("", ["/a" | some _ in numbers.range(1, 513)]): "is longer than 1024 bytes",
		"/a b": "contains characters outside [A-Za-z0-9._@+,=/-]",
	} {
		paths.problem(p) == want
	}
}
