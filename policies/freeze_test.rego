# Unit tests for policies/freeze.rego.
package signoff.freeze_test

import rego.v1

import data.signoff.freeze

start := {"action": "freeze_start", "principal": "erin@example.com", "groups": ["sre"], "reason": "holiday", "active": []}

test_sre_may_start_a_freeze if {
	freeze.decision.allow with input as start
}

test_outsider_may_not_start_a_freeze if {
	d := freeze.decision with input as object.union(start, {"principal": "dana@example.com", "groups": ["checkout-owners"]})
	not d.allow
	contains(d.reason, "not in the groups")
}

test_a_freeze_needs_a_reason if {
	d := freeze.decision with input as object.union(start, {"reason": "  "})
	not d.allow
}

test_release_managers_may_end_a_freeze if {
	freeze.decision.allow with input as {"action": "freeze_end", "principal": "alice@example.com", "groups": ["release-managers"], "active": ["freeze-1"]}
}

test_freeze_groups_follow_the_release_config if {
	d := freeze.decision with input as object.union(start, {"config": {"freeze_groups": ["cab"]}})
	not d.allow
}
