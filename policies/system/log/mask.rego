# METADATA
# title: Decision-log mask
# description: |
#   OPA's decision logger asks data.system.log.mask which paths of each
#   logged event to erase (deploy/opa/config.yaml: decision_logs.mask_decision).
#   Nothing logs decrypted claims beyond uid, gid and groups, so every other
#   identity field - user, host, realm, token id, anything added later - is
#   erased before the event leaves OPA; so is the job's command line, which
#   no policy reads and which may carry secrets. What is left is the input a
#   replay needs, the same the server's audit line keeps.
package system.log

# The identity fields that may be logged.
_loggable := {"uid", "gid", "groups"}

# Request fields that are never logged.
_unlogged_request := {"command"}

# METADATA
# scope: document
# description: JSON pointers of the event fields to erase.
mask contains concat("/", ["/input/identity", field]) if {
	some field, _ in input.input.identity
	not field in _loggable
}

mask contains concat("/", ["/input/request", field]) if {
	some field, _ in input.input.request
	field in _unlogged_request
}
