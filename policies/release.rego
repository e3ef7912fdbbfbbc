# signoff default release policy.
#
# Maps facts about a change (see policies/README.md for the input document) to a risk tier,
# the approval gates it needs and the reasons it must not be promoted at all. The workflow
# asks for data.signoff.release.decision; everything else here is a named, tested helper.
#
# Evaluated in-process by regorus and loadable unchanged by an OPA server (`opa run -s policies/`).
package signoff.release

import rego.v1

# ---------------------------------------------------------------- configuration

# Organisation settings; input.config overrides any of them (see README).
default_config := {
	"coverage_threshold": null,
	"require_provenance": true,
	"production_environments": ["production"],
	# Environments known *not* to be production; any other name (prod, Production, a typo) is
	# treated as production, so a spelling can never lower the bar.
	# Licences (SPDX ids) an artifact's components may carry; a component with another one is
	# denied. Components without a licence are not judged here.
	"allowed_licenses": ["MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "PSF-2.0", "Python-2.0", "MPL-2.0", "0BSD", "Unlicense", "Zlib"],
	"denied_suppliers": [],
	"non_production_environments": ["staging", "development", "dev", "test", "qa", "sandbox", "preview"],
	"allow_cli_approvals": true,
	"gate_timeout": "PT24H",
	"on_inconclusive": "rollback",
	# Who may promote a release outside its deploy window or during a freeze (a signed override
	# with a reason), and who may start and end freezes (policies/freeze.rego).
	"window_override_groups": ["release-managers"],
	# What a held canary (canary.on_failure: hold) does when nobody decides by its deadline.
	"hold_default": "rollback",
	"freeze_groups": ["release-managers", "sre"],
}

config := object.union(default_config, object.get(input, "config", {}))

# ---------------------------------------------------------------- facts

production if lower(trim_space(input.environment)) in config.production_environments

production if not lower(trim_space(input.environment)) in config.non_production_environments

agent_authored if is_object(input.agent)

# The humans besides the requester who asked for this change with it.
human_co_requesters contains lower(person) if {
	some person in object.get(input, "co_requesters", [])
	lower(person) != lower(input.requester)
}

# Paths as given, without a leading "./" or "/", lower-cased for matching.
paths contains normalized_path(p) if some p in object.get(input, "paths", [])

normalized_path(p) := trim_prefix(trim_prefix(lower(p), "./"), "/")

# `segment` is a top-level directory of `p` or a directory anywhere inside it.
under(p, segment) if startswith(p, concat("", [segment, "/"]))

under(p, segment) if contains(p, concat("", ["/", segment, "/"]))

docs_or_tests_path(p) if under(p, "docs")

docs_or_tests_path(p) if under(p, "tests")

docs_or_tests_path(p) if endswith(p, ".md")

ci_path(p) if under(p, ".github")

ci_path(p) if under(p, ".ci")

ci_path(p) if under(p, "ci")

ci_path(p) if p in {".gitlab-ci.yml", "jenkinsfile", ".circleci/config.yml"}

deploy_path(p) if under(p, "deploy")

deploy_path(p) if under(p, "k8s")

deploy_path(p) if under(p, "helm")

deploy_path(p) if endswith(p, ".tf")

auth_or_secrets_path(p) if under(p, "auth")

auth_or_secrets_path(p) if under(p, "secrets")

auth_or_secrets_path(p) if contains(p, "secret")

auth_or_secrets_path(p) if contains(p, "credential")

ci_paths contains p if {
	some p in paths
	ci_path(p)
}

# A change is docs/tests-only when it names its paths and every one is documentation or tests;
# a change that names no paths is not known to be harmless.
docs_only if {
	count(paths) > 0
	every p in paths {
		docs_or_tests_path(p)
	}
}

# Paths the release file declares; when signoff derived the paths from Git, every touched path
# must be among them (or none declared at all).
declared contains normalized_path(p) if some p in object.get(input, "declared_paths", [])

undeclared_paths contains p if {
	input.paths_source == "git"
	count(declared) > 0
	some p in paths
	not p in declared
}

# ---------------------------------------------------------------- tier

high_risk_reasons contains sprintf("touches CI configuration: %s", [p]) if some p in ci_paths

high_risk_reasons contains sprintf("touches deploy manifests: %s", [p]) if {
	some p in paths
	deploy_path(p)
}

high_risk_reasons contains sprintf("touches auth or secrets: %s", [p]) if {
	some p in paths
	auth_or_secrets_path(p)
}

high_risk_reasons contains sprintf("production change authored by agent %s", [input.agent.id]) if {
	production
	agent_authored
}

# Tests that failed and then passed on a re-run (signoff's own re-runs, by name).
flaky contains name if {
	is_object(input.tests)
	some name in object.get(input.tests, "flaky", [])
}

# Scanner findings (SARIF): any error denies (below); warnings raise the tier.
finding_rules(level) := sort({sprintf("%s %s", [f.scan, f.rule]) | some f in object.get(object.get(input, "findings", {}), "rules", []); f.level == level})

high_risk_reasons contains sprintf("scanner warnings: %s", [concat(", ", finding_rules("warning"))]) if {
	count(finding_rules("warning")) > 0
}

tier := "high" if {
	count(high_risk_reasons) > 0
} else := "low" if {
	docs_only
	count(flaky) == 0
} else := "medium"

reasons := sort(high_risk_reasons) if tier == "high"

reasons := ["only documentation and tests change"] if tier == "low"

reasons := ["ordinary change: no sensitive paths and not an agent's production change"] if {
	tier == "medium"
	count(flaky) == 0
}

reasons := [sprintf("flaky tests (failed, then passed on a re-run): %s", [concat(", ", sort(flaky))])] if {
	tier == "medium"
	count(flaky) > 0
}

# ---------------------------------------------------------------- gates

owners_group := sprintf("%s-owners", [input.service])

channels := ["slack", "jira", "cli"] if config.allow_cli_approvals == true

channels := ["slack", "jira"] if config.allow_cli_approvals != true

gates := [] if tier == "low"

gates := [{
	"name": input.environment,
	"required": 1,
	"from_groups": [owners_group],
	"quotas": {},
	"timeout": config.gate_timeout,
	"channels": channels,
}] if tier == "medium"

# Chat buttons cannot enforce MFA or device trust: a high-risk production change needs at least
# one approval the person signed themselves (their key on the CLI, or an OIDC token).
min_signed := 1 if production

default min_signed := 0

gates := [{
	"name": input.environment,
	"required": 2,
	"from_groups": ["sre", owners_group, "release-managers"],
	"quotas": {"sre": 1},
	"timeout": config.gate_timeout,
	"channels": channels,
	"min_signed": min_signed,
}] if tier == "high"

# ---------------------------------------------------------------- denials

provenance_given if is_object(input.provenance)

denials contains sprintf("artifact %s failed provenance verification: %s", [input.artifact_digest, object.get(input.provenance, "reason", "no reason given")]) if {
	provenance_given
	object.get(input.provenance, "verified", false) != true
}

# An artifact signoff did not build itself needs a verified Sigstore bundle in production; one
# it built carries signoff's own signed SLSA provenance (checked again by the deploy activity).
denials contains sprintf("artifact %s has no verified provenance and %s requires it; build it with signoff or give a Sigstore bundle", [input.artifact_digest, input.environment]) if {
	not provenance_given
	not built_by_signoff
	production
	config.require_provenance == true
}

built_by_signoff if input.built_by_signoff == true

# ---------------------------------------------------------------- sandbox

# The profile a release command runs in (activities/sandbox.py). Its input is the command's
# facts, not the release input: {command, service, environment, requester, agent,
# network_requested}. A person's release may fetch packages when it asks; an agent's builds and
# every test run are hermetic.
sandbox_profile := "fetch" if {
	input.network_requested == true
	not is_object(input.agent)
} else := "hermetic"

denials contains sprintf("the %s ran outside the sandbox (unconfined), which %s does not allow", [command, input.environment]) if {
	production
	some command, profile in object.get(input, "sandbox", {})
	profile == "unconfined"
}

denials contains sprintf("%d test(s) failed", [input.tests.failed]) if input.tests.failed > 0

denials contains sprintf("%d test(s) errored", [input.tests.errors]) if input.tests.errors > 0

denials contains sprintf("coverage %v%% is under the required %v%%", [input.tests.coverage, config.coverage_threshold]) if {
	is_number(input.tests.coverage)
	is_number(config.coverage_threshold)
	input.tests.coverage < config.coverage_threshold
}

denials contains sprintf("agent %s changes CI configuration (%s) without a human co-requester", [input.agent.id, concat(", ", sort(ci_paths))]) if {
	agent_authored
	count(ci_paths) > 0
	count(human_co_requesters) == 0
}

denials contains sprintf("the release declares its paths but leaves out %s, which commit %s touches; declare every touched path, or none", [p, object.get(input.change, "commit", "?")]) if {
	some p in undeclared_paths
}

denials contains sprintf("scan %s found %s (error) at %s: %s blocks the release", [f.scan, f.rule, f.location, f.rule]) if {
	some f in object.get(object.get(input, "findings", {}), "rules", [])
	f.level == "error"
}

sbom_components contains c if {
	is_object(input.sbom)
	some c in object.get(input.sbom, "components", [])
}

disallowed_components contains sprintf("%s %s (%s)", [c.name, c.version, license]) if {
	some c in sbom_components
	some license in object.get(c, "licenses", [])
	not license in config.allowed_licenses
}

denials contains sprintf("component %s uses a licence that is not on the allow-list; replace it or have the allow-list changed", [d]) if {
	some d in disallowed_components
}

denials contains sprintf("component %s comes from supplier %s, which is not allowed", [c.name, c.supplier]) if {
	some c in sbom_components
	c.supplier in config.denied_suppliers
}

# ---------------------------------------------------------------- canary

on_inconclusive := config.on_inconclusive if {
	config.on_inconclusive in {"rollback", "hold"}
} else := "rollback"

# A release decided while its window is closed is still allowed (it waits in waiting_for_window);
# the reasons say so, so approvers know it will not ship at once.
window_reasons := [sprintf("promotion waits: %s", [concat("; ", input.window.reasons)])] if {
	is_object(input.window)
	input.window.open == false
} else := []

hold_default := config.hold_default if {
	config.hold_default in {"rollback", "forward"}
} else := "rollback"

# ---------------------------------------------------------------- the decision

decision := {
	"tier": tier,
	"gates": array.concat(gates, budget_gates),
	"denials": sort(denials),
	"reasons": array.concat(reasons, window_reasons),
	"on_inconclusive": on_inconclusive,
	"override_groups": config.window_override_groups,
	"hold_default": hold_default,
	"allow": count(denials) == 0,
}
