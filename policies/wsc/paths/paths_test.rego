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

test_ends_mark_every_ancestor if {
	paths.ends("/a/bc/d") == [2, 5, 7]
	paths.ends("/") == [1]
}
