# Job actions: get, cancel and set_priority on a stored job. The job's owner
# uid and project come from the stored pod, never from the caller. Your own
# job is always yours; another user's job needs a level in that job's project
# that allows it (view_others to see it, act_on_others - admin - to act on it).
package wsc.authz

import data.wsc.privilege

# Your own job (whose owner is the token's valid uid).
_allowed := {"allow": true, "reasons": [], "privileges": p} if {
	input.action in {"get", "cancel"}
	input.request.job.owner_uid == input.identity.uid
	is_string(input.request.job.project)
	[_, p] := _caller
}

# Another user's job: your level in its project must see (get) or act on
# (cancel) other members' jobs. Group limits never set these booleans
# (data.wsc.datacheck), so the level alone decides.
_allowed := {"allow": true, "reasons": [], "privileges": p} if {
	right := {"get": "view_others", "cancel": "act_on_others"}[input.action]
	job := input.request.job
	[_, p] := _caller
	levels := data.wsc.levels
	levels[p[job.project]][right]
	_is_id(job.owner_uid)
}

# Your own job or, as for cancel, another's; the ceiling is your own level in
# the job's project, so an owner who left the project cannot re-prioritise.
_allowed := {"allow": true, "reasons": [], "privileges": p, "priority": priority} if {
	input.action == "set_priority"
	job := input.request.job
	[gid_keys, p] := _caller
	level := p[job.project]
	_may_act(job, level)
	priority := input.request.priority
	_is_id(priority)
	[_, rights] := privilege.group(gid_keys, job.project, level)
	priority <= rights.max_priority
}

_may_act(job, level) if job.owner_uid == input.identity.uid

else if {
	data.wsc.levels[level].act_on_others
	_is_id(job.owner_uid)
}

# --- denial path -------------------------------------------------------------------

_job_ok if {
	_is_id(input.request.job.owner_uid)
	is_string(input.request.job.project)
}

_own_job if {
	_job_ok
	input.request.job.owner_uid == input.identity.uid
}

_may_see_job if _own_job

_may_see_job if {
	_job_ok
	data.wsc.levels[_job_level].view_others
}

_may_act_on_job if _own_job

_may_act_on_job if {
	_job_ok
	data.wsc.levels[_job_level].act_on_others
}

# The caller's level in the job's project.
_job_level := _any_levels[input.request.job.project]

_job_rights := privilege.group(_any_gid_keys, input.request.job.project, _job_level)[1]

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
	not _job_level
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
	not _job_level
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
