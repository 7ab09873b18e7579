# Job actions: get, cancel and set_priority on a stored job. The job's owner
# uid and project come from the stored pod, never from the caller. Your own
# job is always yours; another user's job needs a level in that job's project
# that allows it (view_others to see it, act_on_others - admin - to act on it).
package wsc.authz

import data.wsc.privilege

_job_ok if {
	_is_id(input.request.job.owner_uid)
	is_string(input.request.job.project)
}

_own_job if {
	_job_ok
	input.request.job.owner_uid == input.identity.uid
}

# The caller's membership of the job's project: [gid key, level].
_job := _members[input.request.job.project]

_job_rights := privilege.rights(_job)

_job_level := _job[1]

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

# The priority asked for, else (submit only) the level's default.
default _priority := null

_priority := input.request.priority if _has_priority

_priority := _project_rights.default_priority if {
	input.action == "submit"
	not _has_priority
}

_has_priority if "priority" in object.keys(input.request)

_job_denials contains "request.job: needs owner_uid (integer) and project (string)" if not _job_ok

_job_denials contains "job of another user in a project you are not a member of" if {
	_job_ok
	not _own_job
	not _job
}

_job_denials contains msg if {
	input.action == "get"
	not _may_see_job
	msg := sprintf(
		"job of uid %v in project %q: level %q may not see other members' jobs",
		[input.request.job.owner_uid, input.request.job.project, _job_level],
	)
}

_job_denials contains msg if {
	input.action in {"cancel", "set_priority"}
	not _may_act_on_job
	msg := sprintf(
		"job of uid %v in project %q: acting on another user's job needs admin there, your level is %q",
		[input.request.job.owner_uid, input.request.job.project, _job_level],
	)
}

_job_denials contains "request.priority: must be an integer >= 0" if {
	input.action == "set_priority"
	not _is_id(_priority)
}

_job_denials contains msg if {
	input.action == "set_priority"
	_own_job
	not _job
	msg := sprintf("project %q: setting a priority needs membership in the job's project", [input.request.job.project])
}

_job_denials contains msg if {
	input.action == "set_priority"
	_priority > _job_rights.max_priority
	msg := sprintf(
		"project %q: priority %v exceeds the ceiling %v of level %q",
		[input.request.job.project, _priority, _job_rights.max_priority, _job_level],
	)
}
