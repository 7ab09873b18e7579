package system.log_test

import data.system.log

test_identity_fields_beyond_ids_are_masked if {
	event := {"input": {
		"identity": {
			"uid": 1001, "gid": 1001, "groups": [2001],
			"user": "alice", "host": "login1", "realm": "wsc", "token_id": "ab",
		},
		"action": "submit",
		"request": {"project": "ml-team", "command": ["train", "--api-key=s3cret"]},
	}}
	masked := log.mask with input as event
	masked == {
		"/input/identity/user",
		"/input/identity/host",
		"/input/identity/realm",
		"/input/identity/token_id",
		"/input/request/command",
	}
}

test_nothing_to_mask_without_identity if {
	masked := log.mask with input as {"input": {"action": "list"}}
	count(masked) == 0
}
