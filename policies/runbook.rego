# Who must certify a runbook before it may run: the two-person rule, decided by policy.
#
# Input (built by signoff.runbooks.certification_input):
#   {"name": str, "version": str, "actions": [str], "allowed_groups": [str], "has_gate": bool}
package signoff.runbook

import rego.v1

# Actions that change what serves production, or run code, need a second certifier.
risky_actions := {"rollback", "scale", "set_weight", "run_script"}

default certifiers_required := 1

certifiers_required := 2 if {
	some action in input.actions
	action in risky_actions
}

# A runbook a release may start by itself (remediation) is certified by two people too.
certifiers_required := 2 if "automation" in input.allowed_groups

reasons contains sprintf("step action %q changes production or runs code", [action]) if {
	some action in input.actions
	action in risky_actions
}

reasons contains "it may be started automatically after a rollback (allowed_groups has automation)" if {
	"automation" in input.allowed_groups
}
