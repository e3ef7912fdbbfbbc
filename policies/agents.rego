# Who may suspend or resume a software agent (`signoff agent suspend|resume`).
#
# Input (built by activities/agents.py from the verified request and the worker's registry):
#   {"action": "suspend" | "resume", "reason": str, "channel": str,
#    "principal": {"kind": "person" | "agent" | "gateway", "id": str, "groups": [str]},
#    "agent": {"id": str, "known": bool, "owner": str, "status": "active" | "suspended"}}
# The workflow asks for data.signoff.agents.denials; an empty set allows the request.
package signoff.agents

import rego.v1

# The people who answer for production at any hour: they stop an agent, and only they restart it.
controllers := {"on-call", "sre"}

denials contains sprintf("agent %s is not in the agent registry; check the id with `signoff agent list`", [input.agent.id]) if {
	not input.agent.known
}

denials contains sprintf("only people may %s an agent, not a %s", [input.action, input.principal.kind]) if {
	input.principal.kind != "person"
}

denials contains sprintf("%s is not on-call or SRE; only they may %s an agent", [input.principal.id, input.action]) if {
	input.principal.kind == "person"
	count({g | some g in input.principal.groups; g in controllers}) == 0
}

denials contains "a suspension needs a reason; say what the agent did" if {
	input.action == "suspend"
	trim_space(object.get(input, "reason", "")) == ""
}

# The human an agent acts for is not the one to vouch for it again after someone stopped it.
denials contains sprintf("%s is the owner agent %s acts for and cannot resume it; ask another on-call or SRE engineer", [input.principal.id, input.agent.id]) if {
	input.action == "resume"
	lower(input.principal.id) == lower(object.get(input.agent, "owner", ""))
}
