package signoff.agents_test

import rego.v1

import data.signoff.agents

request(action, who, groups) := {
	"action": action,
	"reason": "it deployed an unreviewed migration",
	"channel": "cli",
	"principal": {"kind": "person", "id": who, "groups": groups},
	"agent": {"id": "release-bot", "known": true, "owner": "dana@example.com", "status": "active"},
}

test_on_call_may_suspend if {
	count(agents.denials) == 0 with input as request("suspend", "carol@example.com", ["on-call"])
}

test_sre_may_resume if {
	count(agents.denials) == 0 with input as request("resume", "erin@example.com", ["sre"])
}

test_others_may_not if {
	agents.denials == {"alice@example.com is not on-call or SRE; only they may suspend an agent"} with input as request("suspend", "alice@example.com", ["release-managers"])
}

test_agents_may_not_control_agents if {
	d := agents.denials with input as object.union(request("suspend", "other-bot", ["on-call"]), {"principal": {"kind": "agent"}})
	"only people may suspend an agent, not a agent" in d
}

test_suspension_needs_a_reason if {
	d := agents.denials with input as object.union(request("suspend", "carol@example.com", ["on-call"]), {"reason": "  "})
	"a suspension needs a reason; say what the agent did" in d
}

test_owner_cannot_resume_own_agent if {
	d := agents.denials with input as request("resume", "dana@example.com", ["on-call"])
	count(d) == 1
}

test_unknown_agent_is_named if {
	d := agents.denials with input as object.union(request("suspend", "carol@example.com", ["on-call"]), {"agent": {"id": "ghost", "known": false}})
	"agent ghost is not in the agent registry; check the id with `signoff agent list`" in d
}
