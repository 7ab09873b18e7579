# METADATA
# title: Path normalisation
# description: |
#   Turns a requested NFS path into one clean absolute path before any export
#   is matched. Only a safe ASCII charset is accepted: percent-encoding is
#   refused rather than decoded, and non-ASCII (unicode look-alikes of '/' or
#   '.') is refused rather than folded. '.', '//' and a trailing '/' vanish;
#   '..' is resolved lexically and may never climb above '/'.
#   problem(p) says why a path is refused; normalise(p) is the clean form of a
#   path problem(p) accepts.
package wsc.paths

# METADATA
# description: Longest path accepted, in bytes.
max_length := 1024

# METADATA
# description: Most '/'-separated components a path may have (before '..' is resolved).
max_segments := 64

# METADATA
# description: Longest component accepted, in bytes (NAME_MAX).
max_component_length := 255

# METADATA
# description: The characters a path may use.
charset := "A-Za-z0-9._@+,=/-"

# METADATA
# description: Why path p is refused, the first thing wrong with it; undefined when p is acceptable.
problem(p) := "is not a string" if not is_string(p)

else := sprintf("is longer than %d bytes", [max_length]) if count(p) > max_length

else := _charset_problem(p) if not regex.match(_absolute_in_charset, p)

else := sprintf("has more than %d components", [max_segments]) if strings.count(p, "/") > max_segments

else := sprintf("has a component longer than %d bytes", [max_component_length]) if {
	regex.match(_overlong_component, p)
} else := "climbs above / with '..'" if {
	".." in _names(p)
	some depth in _depths(_names(p))
	depth < 0
}

# METADATA
# description: |
#   The clean absolute form of an acceptable path p ("/a/./b//../c/" -> "/a/c"):
#   no empty or '.' components, '..' resolved, no trailing '/'. Only meaningful
#   when problem(p) is undefined.
normalise(p) := _join(_resolve(_names(p))) if ".." in _names(p)

else := _join(_names(p))

# METADATA
# description: |
#   The ancestors of clean path c, shortest first: the root, each prefix of c
#   that ends before a '/', and c itself ("/a/b" -> ["/", "/a", "/a/b"]).
# scope: document
ancestors("/") := ["/"]

ancestors(c) := array.concat(["/"], below("/", c)) if c != "/"

# METADATA
# description: |
#   The paths from just below ancestor a down to c itself, shortest first, as
#   ancestors(c) lists them ("/a" and "/a/b/c" -> ["/a/b", "/a/b/c"]; an
#   ancestor and itself -> []). Paths relative to an export use it too: ""
#   stands for the export itself ("" and "x/y" -> ["x", "x/y"]).
below(a, c) := [] if a == c

else := [substring(c, 0, end) | some end in _ends(c); end > count(a)]

# Where each prefix of c that ends at a component boundary ends: before each
# '/' (other than a leading one) and at the end of c.
_ends(c) := array.concat([k | some k in indexof_n(c, "/"); k > 0], [count(c)])

# An absolute path over charset; a run of more than max_component_length
# characters without a '/'.
_absolute_in_charset := sprintf("^/[%s]*$", [charset])

_overlong_component := sprintf("[^/]{%d}", [max_component_length + 1])

_charset_problem(p) := "contains non-ASCII characters (unicode look-alikes are refused)" if {
	regex.match(`[^\x00-\x7f]`, p)
} else := "contains '%' (percent-encoding is refused, not decoded)" if {
	contains(p, "%")
} else := sprintf("contains characters outside [%s]", [charset]) if {
	not regex.match(sprintf("^[%s]*$", [charset]), p)
} else := "is not absolute"

_join(names) := concat("", ["/", concat("/", names)])

# Components that are not empty and not '.'.
_names(p) := [part | some part in split(p, "/"); not part in {"", "."}]

# Depth after each component: +1 for a name, -1 for '..'.
_depths(parts) := [sum([_step(s) | some s in array.slice(parts, 0, i + 1)]) | some i, _ in parts]

_step("..") := -1

_step(part) := 1 if part != ".."

# A name survives if the depth never drops below its own depth afterwards.
_resolve(parts) := [part |
	depths := _depths(parts)
	some i, part in parts
	part != ".."
	every later in array.slice(depths, i + 1, count(depths)) {
		later >= depths[i]
	}
]
