# Job actions: get, logs, cancel and set_priority on a stored job. The job's
# owner uid and project come from the stored pod, never from the caller. Your
# own job is always yours; another user's job needs a level in that job's
# project that allows it (view_others to see it and read its output,
# act_on_others - admin - to act on it).
package wsc.authz

import data.wsc.privilege

_job_actions := {"get", "logs", "cancel", "set_priority"}

# Seeing a job and reading its output need the same right.
_viewing_actions := {"get", "logs"}

_permitted if {
	input.action in _viewing_actions
	_may_see_job
}

_permitted if {
	input.action in {"cancel", "set_priority"}
	_may_act_on_job
}

_outputs := {} if input.action in {"get", "logs", "cancel"}

_outputs := {"priority": _priority} if input.action == "set_priority"

_job_ok if {
	_is_id(input.request.job.owner_uid)
	is_string(input.request.job.project)
}

_own_job if {
	_job_ok
	input.request.job.owner_uid == input.identity.uid
}

# The caller's membership in the job's project, and what its level allows there.
_job_membership := _membership[input.request.job.project]

_job_rights := privilege.rights(_job_membership)

_may_see_job if _own_job

_may_see_job if {
	_job_ok
	_job_rights.view_others
}

_may_act_on_job if _own_job

_may_act_on_job if {
	_job_ok
	_job_rights.act_on_others
}

# --- denials -----------------------------------------------------------------------

deny contains msg if {
	input.action in _job_actions
	some msg in _job_denials
}

_job_denials contains "request.job: needs owner_uid (integer) and project (string)" if not _job_ok

_job_denials contains "job of another user in a project you are not a member of" if {
	_job_ok
	not _own_job
	not _job_membership
}

_job_denials contains msg if {
	input.action in _viewing_actions
	not _may_see_job
	msg := sprintf(
		"job of uid %v in project %q: level %q may not see other members' jobs",
		[input.request.job.owner_uid, input.request.job.project, _job_membership.level],
	)
}

_job_denials contains msg if {
	input.action in {"cancel", "set_priority"}
	not _may_act_on_job
	msg := sprintf(
		"job of uid %v in project %q: acting on another user's job needs admin there, your level is %q",
		[input.request.job.owner_uid, input.request.job.project, _job_membership.level],
	)
}

_job_denials contains "request.priority: must be an integer >= 0" if {
	input.action == "set_priority"
	not _is_id(_priority)
}

_job_denials contains msg if {
	input.action == "set_priority"
	_own_job
	not _job_membership
	msg := sprintf("project %q: setting a priority needs membership in the job's project", [input.request.job.project])
}

_job_denials contains msg if {
	input.action == "set_priority"
	_priority_over(_job_rights)
	msg := sprintf(
		"project %q: priority %v exceeds the ceiling %v of level %q",
		[input.request.job.project, _priority, _job_rights.max_priority, _job_membership.level],
	)
}
