# METADATA
# title: Decision-log mask
# description: |
#   OPA's decision logger asks data.system.log.mask which paths of each
#   logged event to erase (deploy/opa/config.yaml: decision_logs.mask_decision).
#   Invariant 7: nothing logs decrypted claims beyond uid, gid and groups, so
#   every other identity field - user, host, realm, token id, anything added
#   later - is erased before the event leaves OPA.
package system.log

# The identity fields that may be logged.
_loggable := {"uid", "gid", "groups"}

# METADATA
# description: JSON pointers of the event fields to erase.
mask contains concat("/", ["/input/identity", field]) if {
	some field, _ in input.input.identity
	not field in _loggable
}
