# Who may start and end change freezes (signoff freeze start / end).
#
# Input: {action: "freeze_start" | "freeze_end", principal, groups, reason, service,
# environment, until, pause_canaries, active}. The principal is already authenticated (a signed
# request); this decides whether they may. The groups are release.rego's default_config
# freeze_groups, which input.config.freeze_groups may replace.
package signoff.freeze

import rego.v1

import data.signoff.release

default decision := {"allow": false, "reason": "only members of the freeze groups may start or end a freeze"}

allowed_groups := object.get(object.get(input, "config", {}), "freeze_groups", release.default_config.freeze_groups)

member if {
	some g in input.groups
	g in allowed_groups
}

decision := {"allow": false, "reason": "a freeze needs a reason; say why changes must stop"} if {
	input.action == "freeze_start"
	trim_space(object.get(input, "reason", "")) == ""
} else := {"allow": true, "reason": sprintf("%s is in %s", [input.principal, concat(", ", allowed_groups)])} if {
	member
} else := {"allow": false, "reason": sprintf("%s is not in the groups that may start or end a freeze (%s)", [input.principal, concat(", ", allowed_groups)])}
