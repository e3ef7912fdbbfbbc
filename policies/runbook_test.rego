package signoff.runbook_test

import rego.v1

import data.signoff.runbook

test_notify_and_restart_need_one_certifier if {
	runbook.certifiers_required == 1 with input as {"actions": ["notify", "restart", "wait"], "allowed_groups": ["on-call"]}
}

test_rollback_needs_two if {
	runbook.certifiers_required == 2 with input as {"actions": ["notify", "rollback"], "allowed_groups": ["on-call"]}
}

test_run_script_needs_two if {
	runbook.certifiers_required == 2 with input as {"actions": ["run_script"], "allowed_groups": ["on-call"]}
}

test_scale_and_set_weight_need_two if {
	runbook.certifiers_required == 2 with input as {"actions": ["scale"], "allowed_groups": ["on-call"]}
	runbook.certifiers_required == 2 with input as {"actions": ["set_weight"], "allowed_groups": ["on-call"]}
}

test_automation_needs_two if {
	runbook.certifiers_required == 2 with input as {"actions": ["restart"], "allowed_groups": ["on-call", "automation"]}
}

test_reasons_name_the_action if {
	reasons := runbook.reasons with input as {"actions": ["rollback"], "allowed_groups": ["on-call"]}
	reasons == {"step action \"rollback\" changes production or runs code"}
}
