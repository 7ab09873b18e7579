# METADATA
# title: Path normalisation
# description: |
#   Turns a requested NFS path into one clean absolute path before any export
#   is matched. Only a safe ASCII charset is accepted: percent-encoding is
#   refused rather than decoded, and non-ASCII (unicode look-alikes of '/' or
#   '.') is refused rather than folded. '.', '//' and a trailing '/' vanish;
#   '..' is resolved lexically and may never climb above '/'. The common case
#   (no '..' component) is accepted and normalised by clean(p) in a handful of
#   builtin calls with constant, precompiled patterns and no per-component
#   iteration; problem(p) and normalise(p) handle everything else.
package wsc.paths

# METADATA
# description: Longest path accepted, in bytes.
max_length := 1024

# METADATA
# description: Most '/'-separated components a path may have (before '..' is resolved).
max_segments := 64

# METADATA
# description: Why path p is refused; undefined when p is acceptable.
problem(p) := "is not a string" if not is_string(p)

else := "is longer than 1024 bytes" if count(p) > max_length

else := _charset_problem(p) if not regex.match("^/[A-Za-z0-9._@+,=/-]*$", p)

else := "has more than 64 components" if strings.count(p, "/") > max_segments

else := "has a component longer than 255 bytes" if regex.match("[^/]{256}", p)

else := "climbs above / with '..'" if {
	_has_dotdot(p)
	some depth in _depths(_names(p))
	depth < 0
}

# METADATA
# description: |
#   The clean absolute form of an acceptable path p ("/a/./b//../c/" -> "/a/c").
#   Only meaningful when problem(p) is undefined. An already clean path costs
#   one regex match.
normalise(p) := p if _clean(p)

else := _join(_resolve(_names(p))) if _has_dotdot(p)

else := _join(_names(p))

# METADATA
# description: |
#   The clean absolute form of p when p is acceptable (problem(p) undefined)
#   and has no '..' component: the common case, decided by one regex match and
#   normalised by one regex replacement ('//', '/./', a trailing '/' or '/.'
#   vanish). Undefined for anything else, including every path problem(p)
#   refuses: callers fall back to problem(p) and normalise(p).
#   The limits and the pattern are written out (not max_length, a named
#   pattern rule, ...): this runs for every mount of every submit, and each
#   rule reference costs a lookup. The pattern: an absolute path over the
#   accepted charset whose components are all empty, '.' or names ('..' is not
#   one of them; "..." and "..x" are). Squashing "/", "//" or "/." leaves "",
#   the root.
clean(p) := object.get({"": "/"}, squashed, squashed) if {
	is_string(p)
	count(p) <= 1024

	# regal ignore:line-length
	regex.match(`^(?:/(?:[A-Za-z0-9_@+,=-][A-Za-z0-9._@+,=-]*|\.(?:[A-Za-z0-9_@+,=-][A-Za-z0-9._@+,=-]*)?|\.\.[A-Za-z0-9._@+,=-]+)?)+$`, p)
	strings.count(p, "/") <= 64
	not regex.match(`[^/]{256}`, p)
	squashed := regex.replace(p, `/(?:\.?/)*\.?$|(/)(?:\.?/)+`, "$1")
}

# METADATA
# description: |
#   Where each ancestor of clean path c ends, c itself included: c's ancestors
#   are substring(c, 0, k) for k in ends(c) ("/a/b" -> [2, 4]: "/a", "/a/b").
ends(c) := array.concat([k | some k in indexof_n(c, "/"); k > 0], [count(c)])

_charset_problem(p) := "contains non-ASCII characters (unicode look-alikes are refused)" if {
	regex.match(`[^\x00-\x7f]`, p)
} else := "contains '%' (percent-encoding is refused, not decoded)" if {
	contains(p, "%")
} else := "contains characters outside [A-Za-z0-9._@+,=/-]" if {
	not regex.match(`^[A-Za-z0-9._@+,=/-]*$`, p)
} else := "is not absolute"

_has_dotdot(p) if regex.match(`(^|/)\.\.(/|$)`, p)

# Every component is a name: no empty, '.' or '..' components, no trailing '/'.
_clean(p) if regex.match(`^(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+))+$`, p)

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
