# Unit tests for policies/release_budgets.rego: each budget denies over its limit and not under it, the
# organisation's config can turn a budget into a gate, and without usage nothing is judged.
package signoff.budgets_test

import rego.v1

import data.signoff.release

base := {
	"service": "checkout",
	"environment": "staging",
	"requester": "dana@example.com",
	"co_requesters": [],
	"paths": ["docs/checkout.md"],
	"tests": null,
	"provenance": null,
	"artifact_digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
	"time": "2025-01-01T12:00:00Z",
	"config": {},
}

with_agent(budgets, usage) := object.union(base, {"agent": {"id": "release-bot", "model": "m", "budgets": budgets, "usage": usage}})

idle := {"releases_today": 0, "build_minutes_today": 0, "canaries_now": 0}

test_third_release_of_the_day_is_denied_naming_the_budget if {
	d := release.denials with input as with_agent({"releases_per_day": 2}, object.union(idle, {"releases_today": 2}))
	d == {"agent release-bot is over its budget releases_per_day: this would be its release number 3 today, and releases_per_day allows 2; wait until tomorrow (UTC) or have the budget raised"}
}

test_second_release_of_the_day_is_allowed if {
	count(release.denials) == 0 with input as with_agent({"releases_per_day": 2}, object.union(idle, {"releases_today": 1}))
}

test_build_minutes_budget if {
	some d in release.denials with input as with_agent({"build_minutes_per_day": 30}, object.union(idle, {"build_minutes_today": 31.25}))
	contains(d, "budget build_minutes_per_day: its builds ran 31.3 minute(s) today")
	count(release.denials) == 0 with input as with_agent({"build_minutes_per_day": 30}, object.union(idle, {"build_minutes_today": 12}))
}

test_concurrent_canaries_budget if {
	some d in release.denials with input as with_agent({"concurrent_canaries": 1}, object.union(idle, {"canaries_now": 1}))
	contains(d, "budget concurrent_canaries: 1 of its releases are in canary now")
	count(release.denials) == 0 with input as with_agent({"concurrent_canaries": 2}, object.union(idle, {"canaries_now": 1}))
}

test_cost_budget if {
	some d in release.denials with input as with_agent({"cost_per_release": 40, "cost_per_day": 100}, object.union(idle, {"releases_today": 2}))
	contains(d, "budget cost_per_day: at 40 per release this would spend 120 today")
	count(release.denials) == 0 with input as with_agent({"cost_per_release": 40, "cost_per_day": 100}, object.union(idle, {"releases_today": 1}))
}

test_organisation_budgets_apply_and_the_registry_overrides_them if {
	org := object.union(with_agent({}, object.union(idle, {"releases_today": 1})), {"config": {"agent_budgets": {"release-bot": {"releases_per_day": 1}}}})
	count(release.denials) == 1 with input as org
	raised := object.union(org, {"agent": object.union(org.agent, {"budgets": {"releases_per_day": 5}})})
	count(release.denials) == 0 with input as raised
}

test_budget_as_a_gate_asks_sre_instead_of_denying if {
	doc := object.union(with_agent({"releases_per_day": 2}, object.union(idle, {"releases_today": 2})), {"config": {"budget_actions": {"releases_per_day": "gate"}}})
	count(release.denials) == 0 with input as doc
	gates := release.decision.gates with input as doc
	some g in gates
	g.name == "budget"
	g.from_groups == ["sre"]
}

test_without_usage_no_budget_is_judged if {
	doc := object.union(base, {"agent": {"id": "release-bot", "model": "m", "budgets": {"releases_per_day": 0}}})
	count(release.denials) == 0 with input as doc
	release.budget_gates == [] with input as doc
}

test_people_have_no_budget if {
	doc := object.union(base, {"agent": null, "config": {"agent_budgets": {"release-bot": {"releases_per_day": 0}}}})
	count(release.denials) == 0 with input as doc
}
