# Unit tests for policies/release.rego: at least one test_ rule per rule of the default policy,
# and for each denial both the case that denies and the case that must not.
# Run with `signoff policy test` (regorus) or `opa test policies/`.
package signoff.release_test

import rego.v1

import data.signoff.release

# An ordinary human change to production with good tests and verified provenance.
base := {
	"service": "checkout",
	"environment": "production",
	"requester": "dana@example.com",
	"agent": null,
	"co_requesters": [],
	"paths": ["src/checkout/cart.py"],
	"tests": {"passed": 10, "failed": 0, "skipped": 0, "errors": 0, "coverage": 91.0},
	"provenance": {"verified": true, "reason": "", "identity": "https://github.com/acme/checkout/.github/workflows/release.yml@refs/tags/v1", "issuer": "https://token.actions.githubusercontent.com"},
	"artifact_digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
	"time": "2025-01-01T12:00:00Z",
	"config": {},
}

agent := {"id": "release-bot", "model": "gpt-x", "prompt_sha256": "ab"}

with_paths(ps) := object.union(base, {"paths": ps})

# ------------------------------------------------------------ config

test_config_defaults_apply_without_input_config if {
	release.config.require_provenance == true with input as object.remove(base, ["config"])
	release.config.production_environments == ["production"] with input as base
}

test_config_input_overrides_defaults if {
	release.config.coverage_threshold == 80 with input as object.union(base, {"config": {"coverage_threshold": 80}})
}

test_default_config_is_safe if {
	release.default_config.on_inconclusive == "rollback"
	release.default_config.allow_cli_approvals == true
}

# ------------------------------------------------------------ facts

test_production_environment if {
	release.production with input as base
}

test_staging_is_not_production if {
	not release.production with input as object.union(base, {"environment": "staging"})
}

test_production_environments_configurable if {
	release.production with input as object.union(base, {"environment": "prod-eu", "config": {"production_environments": ["prod-eu"]}})
}

test_agent_authored if {
	release.agent_authored with input as object.union(base, {"agent": agent})
	not release.agent_authored with input as base
}

test_human_co_requesters_exclude_requester if {
	release.human_co_requesters == {"erin@example.com"} with input as object.union(base, {"co_requesters": ["Dana@example.com", "erin@example.com"]})
}

test_paths_normalized if {
	release.paths == {"docs/a.md", ".github/x.yml", "src/y.py"} with input as with_paths(["./docs/A.md", "/.github/x.yml", "src/y.py"])
}

test_normalized_path if {
	release.normalized_path("./Docs/Guide.MD") == "docs/guide.md"
}

test_under_top_level_and_nested if {
	release.under("docs/a.md", "docs")
	release.under("services/web/docs/a.md", "docs")
	not release.under("docsite/a.md", "docs")
}

test_docs_or_tests_path if {
	release.docs_or_tests_path("docs/intro.txt")
	release.docs_or_tests_path("tests/test_cart.py")
	release.docs_or_tests_path("readme.md")
	not release.docs_or_tests_path("src/cart.py")
}

test_ci_path if {
	release.ci_path(".github/workflows/release.yml")
	release.ci_path(".ci/run")
	release.ci_path("ci/pipeline.yml")
	release.ci_path(".gitlab-ci.yml")
	release.ci_path("jenkinsfile")
	not release.ci_path("src/ci_helpers.py")
}

test_deploy_path if {
	release.deploy_path("deploy/values.yaml")
	release.deploy_path("k8s/deployment.yaml")
	release.deploy_path("helm/chart/values.yaml")
	release.deploy_path("infra/main.tf")
	not release.deploy_path("src/deployer.py")
}

test_auth_or_secrets_path if {
	release.auth_or_secrets_path("auth/login.py")
	release.auth_or_secrets_path("secrets/prod.enc")
	release.auth_or_secrets_path("config/client_secret.json")
	release.auth_or_secrets_path("src/credentials.py")
	not release.auth_or_secrets_path("src/cart.py")
}

test_ci_paths if {
	release.ci_paths == {".github/workflows/x.yml"} with input as with_paths([".github/workflows/x.yml", "src/a.py"])
}

test_docs_only if {
	release.docs_only with input as with_paths(["docs/a.txt", "README.md", "tests/test_a.py"])
	not release.docs_only with input as with_paths(["docs/a.txt", "src/a.py"])
}

test_no_paths_is_not_docs_only if {
	not release.docs_only with input as with_paths([])
}

# ------------------------------------------------------------ tier

test_high_risk_reason_ci if {
	"touches CI configuration: .github/workflows/ci.yml" in release.high_risk_reasons with input as with_paths([".github/workflows/ci.yml"])
}

test_high_risk_reason_deploy if {
	"touches deploy manifests: k8s/deployment.yaml" in release.high_risk_reasons with input as with_paths(["k8s/deployment.yaml"])
}

test_high_risk_reason_auth if {
	"touches auth or secrets: auth/session.py" in release.high_risk_reasons with input as with_paths(["auth/session.py"])
}

test_high_risk_reason_agent_in_production if {
	"production change authored by agent release-bot" in release.high_risk_reasons with input as object.union(base, {"agent": agent})
}

test_agent_outside_production_is_not_high if {
	release.tier == "medium" with input as object.union(base, {"agent": agent, "environment": "staging"})
}

test_tier_low_for_docs_only if {
	release.tier == "low" with input as with_paths(["docs/a.md", "tests/test_a.py"])
}

test_tier_medium_for_ordinary_change if {
	release.tier == "medium" with input as base
}

test_tier_high_for_sensitive_paths if {
	release.tier == "high" with input as with_paths(["helm/values.yaml"])
}

test_tier_high_beats_docs_only_for_agent_in_production if {
	release.tier == "high" with input as object.union(with_paths(["docs/a.md"]), {"agent": agent})
}

test_reasons_per_tier if {
	release.reasons == ["only documentation and tests change"] with input as with_paths(["docs/a.md"])
	count(release.reasons) == 1 with input as base
	release.reasons == ["touches deploy manifests: main.tf"] with input as with_paths(["main.tf"])
}

# ------------------------------------------------------------ gates

test_owners_group if {
	release.owners_group == "checkout-owners" with input as base
}

test_channels_allow_cli_by_default if {
	release.channels == ["slack", "jira", "cli"] with input as base
}

test_channels_without_cli_when_disabled if {
	release.channels == ["slack", "jira"] with input as object.union(base, {"config": {"allow_cli_approvals": false}})
}

test_gates_low_none if {
	release.gates == [] with input as with_paths(["docs/a.md"])
}

test_gates_medium_one_owner if {
	[gate] := release.gates with input as base
	gate.name == "production"
	gate.required == 1
	gate.from_groups == ["checkout-owners"]
	gate.quotas == {}
	gate.timeout == "PT24H"
}

test_gates_high_two_with_sre if {
	[gate] := release.gates with input as object.union(base, {"agent": agent})
	gate.required == 2
	gate.quotas == {"sre": 1}
	gate.from_groups == ["sre", "checkout-owners", "release-managers"]
}

test_gate_named_after_environment if {
	[gate] := release.gates with input as object.union(base, {"environment": "staging"})
	gate.name == "staging"
}

test_gate_timeout_configurable if {
	[gate] := release.gates with input as object.union(base, {"config": {"gate_timeout": "PT2H"}})
	gate.timeout == "PT2H"
}

# ------------------------------------------------------------ denials

test_provenance_given if {
	release.provenance_given with input as base
	not release.provenance_given with input as object.union(base, {"provenance": null})
}

test_deny_failed_provenance if {
	some d in release.denials with input as object.union(base, {"provenance": {"verified": false, "reason": "digest mismatch"}})
	contains(d, "failed provenance verification: digest mismatch")
}

test_deny_failed_provenance_outside_production_too if {
	count(release.denials) == 1 with input as object.union(base, {"environment": "staging", "provenance": {"verified": false, "reason": "x"}})
}

test_deny_provenance_without_verified_field if {
	count(release.denials) == 1 with input as object.union(object.remove(base, ["provenance"]), {"provenance": {"reason": "?"}})
}

test_absent_provenance_denied_by_default_in_production if {
	some d in release.denials with input as object.union(base, {"provenance": null})
	contains(d, "has no verified provenance")
}

test_absent_provenance_allowed_outside_production if {
	count(release.denials) == 0 with input as object.union(base, {"provenance": null, "environment": "staging"})
}

test_deny_absent_provenance_when_required_in_production if {
	some d in release.denials with input as object.union(base, {"provenance": null, "config": {"require_provenance": true}})
	contains(d, "has no verified provenance and production requires it")
}

test_absent_provenance_required_only_in_production if {
	count(release.denials) == 0 with input as object.union(base, {"environment": "staging", "provenance": null, "config": {"require_provenance": true}})
}

test_deny_failing_tests if {
	"2 test(s) failed" in release.denials with input as object.union(base, {"tests": {"passed": 1, "failed": 2, "skipped": 0, "errors": 0}})
}

test_deny_errored_tests if {
	"1 test(s) errored" in release.denials with input as object.union(base, {"tests": {"passed": 1, "failed": 0, "skipped": 0, "errors": 1}})
}

test_no_tests_no_test_denial if {
	count(release.denials) == 0 with input as object.union(base, {"tests": null})
}

test_deny_coverage_under_threshold if {
	"coverage 70.5% is under the required 80%" in release.denials with input as object.union(base, {"tests": {"passed": 1, "failed": 0, "coverage": 70.5}, "config": {"coverage_threshold": 80}})
}

test_coverage_at_threshold_allowed if {
	count(release.denials) == 0 with input as object.union(base, {"tests": {"passed": 1, "failed": 0, "coverage": 80}, "config": {"coverage_threshold": 80}})
}

test_coverage_unknown_not_denied if {
	count(release.denials) == 0 with input as object.union(base, {"tests": {"passed": 1, "failed": 0, "coverage": null}, "config": {"coverage_threshold": 80}})
}

test_deny_agent_ci_change_without_co_requester if {
	some d in release.denials with input as object.union(with_paths([".github/workflows/ci.yml"]), {"agent": agent})
	contains(d, "agent release-bot changes CI configuration (.github/workflows/ci.yml) without a human co-requester")
}

test_agent_ci_change_with_co_requester_allowed if {
	count(release.denials) == 0 with input as object.union(with_paths([".github/workflows/ci.yml"]), {"agent": agent, "co_requesters": ["erin@example.com"]})
}

test_requester_is_not_own_co_requester if {
	count(release.denials) == 1 with input as object.union(with_paths(["ci/pipeline.yml"]), {"agent": agent, "co_requesters": ["dana@example.com"]})
}

test_human_ci_change_not_denied if {
	count(release.denials) == 0 with input as with_paths([".github/workflows/ci.yml"])
}

# ------------------------------------------------------------ canary

test_on_inconclusive_defaults_to_rollback if {
	release.on_inconclusive == "rollback" with input as base
}

test_on_inconclusive_configurable if {
	release.on_inconclusive == "hold" with input as object.union(base, {"config": {"on_inconclusive": "hold"}})
}

test_on_inconclusive_invalid_falls_back_to_rollback if {
	release.on_inconclusive == "rollback" with input as object.union(base, {"config": {"on_inconclusive": "promote"}})
}

# ------------------------------------------------------------ decision

test_decision_allows_clean_change if {
	d := release.decision with input as base
	d.allow == true
	d.tier == "medium"
	d.denials == []
	count(d.gates) == 1
}

test_decision_collects_every_denial_sorted if {
	d := release.decision with input as object.union(with_paths([".github/x.yml"]), {
		"agent": agent,
		"tests": {"passed": 0, "failed": 3, "coverage": 10},
		"provenance": {"verified": false, "reason": "bad"},
		"config": {"coverage_threshold": 50},
	})
	d.allow == false
	count(d.denials) == 4
	d.denials == sort(d.denials)
}

test_high_tier_production_gate_needs_a_personally_signed_approval if {
	gates := release.gates with input as object.union(base, {"agent": {"id": "bot"}, "paths": ["src/x.py"]})
	gates[0].min_signed == 1
}

test_high_tier_outside_production_takes_chat_approvals_alone if {
	gates := release.gates with input as object.union(base, {"environment": "staging", "paths": [".github/workflows/x.yml"], "co_requesters": ["erin@example.com"]})
	gates[0].min_signed == 0
}

test_min_signed_is_one_in_production_and_zero_elsewhere if {
	release.min_signed == 1 with input as base
	release.min_signed == 0 with input as object.union(base, {"environment": "staging"})
}

test_sandbox_profile_is_hermetic_unless_a_person_asks_for_network if {
	release.sandbox_profile == "hermetic" with input as {"command": "build", "agent": null, "network_requested": false}
	release.sandbox_profile == "fetch" with input as {"command": "build", "agent": null, "network_requested": true}
	release.sandbox_profile == "hermetic" with input as {"command": "build", "agent": {"id": "bot"}, "network_requested": true}
}

test_unconfined_build_is_denied_in_production if {
	some d in release.denials with input as object.union(base, {"sandbox": {"build": "unconfined"}})
	contains(d, "ran outside the sandbox")
}

test_unconfined_build_is_allowed_outside_production if {
	count(release.denials) == 0 with input as object.union(base, {"environment": "staging", "sandbox": {"build": "unconfined"}})
}

test_production_needs_provenance_unless_signoff_built_it if {
	some d in release.denials with input as object.union(base, {"provenance": null, "built_by_signoff": false})
	contains(d, "has no verified provenance")
	count(release.denials) == 0 with input as object.union(base, {"provenance": null, "built_by_signoff": true})
}

test_built_by_signoff_reads_the_input_flag if {
	release.built_by_signoff with input as object.union(base, {"built_by_signoff": true})
	not release.built_by_signoff with input as object.union(base, {"built_by_signoff": false})
}

test_unknown_environment_names_are_production if {
	release.production with input as object.union(base, {"environment": "prod"})
	release.production with input as object.union(base, {"environment": "Production "})
	not release.production with input as object.union(base, {"environment": "staging"})
}

test_derived_path_left_out_of_the_declaration_is_denied if {
	doc := object.union(base, {"paths": [".github/workflows/deploy.yml", "docs/x.md"], "declared_paths": ["docs/x.md"], "paths_source": "git", "change": {"commit": "abc"}})
	release.undeclared_paths == {".github/workflows/deploy.yml"} with input as doc
	some d in release.denials with input as doc
	contains(d, "leaves out .github/workflows/deploy.yml")
	count(release.declared) == 1 with input as doc
}

test_declaring_nothing_is_not_a_contradiction if {
	doc := object.union(base, {"paths": ["src/a.py"], "declared_paths": [], "paths_source": "git", "change": {"commit": "abc"}})
	count(release.undeclared_paths) == 0 with input as doc
}

test_flaky_tests_keep_a_docs_change_from_being_low_risk if {
	doc := object.union(base, {"paths": ["docs/a.md"], "tests": {"passed": 3, "failed": 0, "skipped": 0, "errors": 0, "coverage": null, "flaky": ["t.test_sometimes"]}})
	release.tier == "medium" with input as doc
	release.flaky == {"t.test_sometimes"} with input as doc
	contains(release.reasons[0], "t.test_sometimes") with input as doc
}

test_organisation_threshold_is_not_replaced_by_an_absent_one if {
	release.config.coverage_threshold == 80 with input as object.union(base, {"config": {"coverage_threshold": 80}})
}

test_a_scanner_error_denies_naming_the_rule if {
	doc := object.union(base, {"findings": {"errors": 1, "warnings": 0, "rules": [{"scan": "bandit", "rule": "B602", "level": "error", "location": "bad.py:3"}]}})
	some d in release.denials with input as doc
	contains(d, "B602")
}

test_scanner_warnings_raise_the_tier if {
	doc := object.union(base, {"paths": ["docs/a.md"], "findings": {"errors": 0, "warnings": 1, "rules": [{"scan": "bandit", "rule": "B310", "level": "warning", "location": "x.py:1"}]}})
	release.tier == "high" with input as doc
	release.finding_rules("warning") == ["bandit B310"] with input as doc
}

test_sbom_component_with_a_disallowed_licence_is_denied if {
	doc := object.union(base, {"sbom": {"sha256": "x", "components": [{"name": "left-pad", "version": "1.0", "licenses": ["MIT"], "supplier": ""}, {"name": "gpl-thing", "version": "2.1", "licenses": ["GPL-3.0-only"], "supplier": ""}]}})
	release.disallowed_components == {"gpl-thing 2.1 (GPL-3.0-only)"} with input as doc
	some d in release.denials with input as doc
	contains(d, "gpl-thing")
	count(release.sbom_components) == 2 with input as doc
}

test_sbom_supplier_deny_list if {
	doc := object.union(base, {"config": {"denied_suppliers": ["Evil Corp"]}, "sbom": {"sha256": "x", "components": [{"name": "x", "version": "1", "licenses": [], "supplier": "Evil Corp"}]}})
	some d in release.denials with input as doc
	contains(d, "Evil Corp")
}

test_closed_window_is_explained_not_denied if {
	d := release.decision with input as object.union(base, {"window": {"open": false, "reasons": ["deny window weekend until 2026-12-07T07:00:00Z"]}})
	count(d.denials) == 0
	some r in d.reasons
	contains(r, "deny window weekend")
}

test_hold_default_is_rollback_unless_configured if {
	release.decision.hold_default == "rollback" with input as base
	release.decision.hold_default == "forward" with input as object.union(base, {"config": {"hold_default": "forward"}})
	release.decision.hold_default == "rollback" with input as object.union(base, {"config": {"hold_default": "maybe"}})
}

test_override_groups_come_from_config if {
	d := release.decision with input as object.union(base, {"config": {"window_override_groups": ["sre"]}})
	d.override_groups == ["sre"]
}

test_window_reasons_only_when_closed if {
	count(release.window_reasons) == 0 with input as base
	count(release.window_reasons) == 0 with input as object.union(base, {"window": {"open": true, "reasons": []}})
	release.window_reasons == ["promotion waits: freeze by carol@example.com: incident"] with input as object.union(base, {"window": {"open": false, "reasons": ["freeze by carol@example.com: incident"]}})
}

test_hold_default_rule if {
	release.hold_default == "forward" with input as object.union(base, {"config": {"hold_default": "forward"}})
}
