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

# clean(p), the fast path, agrees with problem(p) and normalise(p) wherever it
# is defined, and leaves every '..' path and every refused path to them.
test_clean_agrees_with_normalise if {
	every p in [
		"/nfs/a/b", "/nfs//a/./b/", "/nfs/...hidden/.x/..y", "/", "/.", "//", "/./.",
		"/a/.", "/a/./", "//a", "/.a/", "/a/.../", "/a/..b/./c//",
	] {
		not paths.problem(p)
		paths.clean(p) == paths.normalise(p)
	}
	every p in [
		"/nfs/a/../b", "/a/..", "/..", "/nfs/../../etc", "nfs/a", "/a%2e", "/a b", "/a/\u2025",
		concat("", ["/", concat("", ["a" | some _ in numbers.range(1, 256)])]),
		concat("", ["/a" | some _ in numbers.range(1, 65)]),
		7,
	] {
		not paths.clean(p)
	}
}
