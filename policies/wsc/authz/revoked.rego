# Revoked tokens. Revocations are admin data (policies/data/wsc/revocations, written by
# `tokensvc revoke`), shipped in the signed bundle. A token is revoked when
# its id is listed; when its uid or origin host is listed and it was
# issued before that entry's issued_before; or when the key that sealed it
# is listed. A revoked token is denied for every action, with the entry's
# reason.
package wsc.authz

default _revocations := {}

_revocations := data.wsc.revocations

_revoked(kind) := object.get(_revocations, kind, [])

_identity_field(name) := object.get(input, ["identity", name], null)

deny contains sprintf("token %s: revoked (%s)", [entry.token_id, entry.reason]) if {
	some entry in _revoked("token_ids")
	entry.token_id == _identity_field("token_id")
}

deny contains msg if {
	some entry in _revoked("uids")
	entry.uid == _uid
	_issued_before(entry.issued_before)
	msg := sprintf("tokens of uid %d issued before %d are revoked (%s)", [entry.uid, entry.issued_before, entry.reason])
}

deny contains msg if {
	some entry in _revoked("hosts")
	entry.host == _identity_field("host")
	_issued_before(entry.issued_before)
	msg := sprintf("tokens minted on host %q before %d are revoked (%s)", [entry.host, entry.issued_before, entry.reason])
}

deny contains sprintf("key %s: revoked (%s)", [entry.key_id, entry.reason]) if {
	some entry in _revoked("key_ids")
	entry.key_id == _identity_field("key_id")
}

# Whether the token was issued before t. A token that does not say when it
# was issued counts as issued before any time: revocation fails closed.
_issued_before(t) if {
	issued := _identity_field("issued_at")
	is_number(issued)
	issued < t
}

_issued_before(_) if not is_number(_identity_field("issued_at"))
