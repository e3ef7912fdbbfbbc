# Loaded after release.rego on purpose (file order): loaded first, regorus made release_test.rego's `with input` tests fail.
# Agents' budgets, as policy: releases per day, build minutes per day, concurrent canaries and
# an optional cost per release (against a cost per day).
#
# The budgets are the agent registry entry's `budgets` (input.agent.budgets) over the
# organisation's `config.agent_budgets[<agent id>]`. The usage (input.agent.usage: releases_today,
# build_minutes_today, canaries_now, counted by the worker from visibility and the signed log)
# is present only when a release is decided; without it (the deploy actuator's re-check) no
# budget is judged. Over a budget is a denial naming it, or, when `config.budget_actions[name]`
# (or `config.budget_action`) says "gate", a `budget` gate an SRE must approve.
package signoff.release

import rego.v1

agent_budgets := object.union(
	object.get(object.get(config, "agent_budgets", {}), input.agent.id, {}),
	object.get(input.agent, "budgets", {}),
) if agent_authored

agent_usage := input.agent.usage if {
	agent_authored
	is_object(object.get(input.agent, "usage", null))
}

over_budget contains {"budget": "releases_per_day", "message": sprintf("this would be its release number %d today, and releases_per_day allows %v", [agent_usage.releases_today + 1, agent_budgets.releases_per_day])} if {
	agent_usage.releases_today + 1 > agent_budgets.releases_per_day
}

over_budget contains {"budget": "build_minutes_per_day", "message": sprintf("its builds ran %v minute(s) today, and build_minutes_per_day allows %v", [round(agent_usage.build_minutes_today * 10) / 10, agent_budgets.build_minutes_per_day])} if {
	agent_usage.build_minutes_today >= agent_budgets.build_minutes_per_day
}

over_budget contains {"budget": "concurrent_canaries", "message": sprintf("%d of its releases are in canary now, and concurrent_canaries allows %v", [agent_usage.canaries_now, agent_budgets.concurrent_canaries])} if {
	agent_usage.canaries_now >= agent_budgets.concurrent_canaries
}

over_budget contains {"budget": "cost_per_day", "message": sprintf("at %v per release this would spend %v today, and cost_per_day allows %v", [agent_budgets.cost_per_release, (agent_usage.releases_today + 1) * agent_budgets.cost_per_release, agent_budgets.cost_per_day])} if {
	(agent_usage.releases_today + 1) * agent_budgets.cost_per_release > agent_budgets.cost_per_day
}

budget_action(name) := object.get(object.get(config, "budget_actions", {}), name, object.get(config, "budget_action", "deny"))

denials contains sprintf("agent %s is over its budget %s: %s; wait until tomorrow (UTC) or have the budget raised", [input.agent.id, b.budget, b.message]) if {
	some b in over_budget
	budget_action(b.budget) == "deny"
}

budget_gates := [{
	"name": "budget",
	"required": 1,
	"from_groups": ["sre"],
	"quotas": {},
	"timeout": config.gate_timeout,
	"channels": channels,
}] if {
	some b in over_budget
	budget_action(b.budget) == "gate"
} else := []
