# Table-driven tests of revocations (data.wsc.revocations).
package wsc.authz_test

import data.wsc.authz

revocation_data := {
	"token_ids": [{"token_id": "0123456789abcdef0123456789abcdef", "reason": "leaked in a log", "revoked_at": 10}],
	"uids": [{"uid": 1004, "issued_before": 1000, "reason": "account compromised", "revoked_at": 10}],
	"hosts": [{"host": "login3", "issued_before": 2000, "reason": "node compromised", "revoked_at": 10}],
	"key_ids": [{"key_id": "00112233445566ff", "reason": "key leaked", "revoked_at": 10}],
}

revoked_who(uid, host, issued_at, token_id, key_id) := {
	"uid": uid, "gid": 2001, "groups": [2001], "host": host,
	"issued_at": issued_at, "token_id": token_id, "key_id": key_id,
}

revoked_other_token := "ffffffffffffffffffffffffffffffff"

revoked_other_key := "0000000000000001"

revoked_listing(identity) := {"identity": identity, "action": "list", "request": {}}

revocation_cases := {
	"an unrevoked token may list": {
		"input": revoked_listing(revoked_who(1002, "login1", 500, revoked_other_token, revoked_other_key)),
		"allow": true,
	},
	"a revoked token id is denied": {
		"input": revoked_listing(revoked_who(1002, "login1", 500, "0123456789abcdef0123456789abcdef", revoked_other_key)),
		"reason": "token 0123456789abcdef0123456789abcdef: revoked (leaked in a log)",
	},
	"a uid's token issued before the time is denied": {
		"input": revoked_listing(revoked_who(1004, "login1", 999, revoked_other_token, revoked_other_key)),
		"reason": "tokens of uid 1004 issued before 1000 are revoked (account compromised)",
	},
	"a uid's token issued at or after the time may list": {
		"input": revoked_listing(revoked_who(1004, "login1", 1000, revoked_other_token, revoked_other_key)),
		"allow": true,
	},
	"a host's token issued before the time is denied": {
		"input": revoked_listing(revoked_who(1002, "login3", 1999, revoked_other_token, revoked_other_key)),
		"reason": "tokens minted on host \"login3\" before 2000 are revoked (node compromised)",
	},
	"a host's token issued after the time may list": {
		"input": revoked_listing(revoked_who(1002, "login3", 2001, revoked_other_token, revoked_other_key)),
		"allow": true,
	},
	"a token without its issue time counts as issued before": {
		"input": revoked_listing(object.remove(
			revoked_who(1002, "login3", 0, revoked_other_token, revoked_other_key),
			["issued_at"],
		)),
		"reason": "tokens minted on host \"login3\" before 2000 are revoked (node compromised)",
	},
	"a token sealed with a revoked key is denied": {
		"input": revoked_listing(revoked_who(1002, "login1", 500, revoked_other_token, "00112233445566ff")),
		"reason": "key 00112233445566ff: revoked (key leaked)",
	},
}

test_revocations[note] if {
	some note, tc in revocation_cases
	d := authz.decision with input as tc.input with data.wsc.revocations as revocation_data
	d.allow == object.get(tc, "allow", false)
	_revocation_reason_ok(tc, d)
}

_revocation_reason_ok(tc, _) if not "reason" in object.keys(tc)

_revocation_reason_ok(tc, d) if tc.reason in d.reasons

test_no_revocations_data_denies_nothing if {
	identity := revoked_who(1004, "login3", 1, revoked_other_token, "00112233445566ff")
	d := authz.decision with input as revoked_listing(identity)
	d.allow
}
