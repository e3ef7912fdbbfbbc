"""The contract: pydantic models shared by the CLI, the client facade, workflows and activities.

Everything that crosses a process boundary (release files, workflow inputs, Update payloads,
activity inputs and results, ReleaseStatus) is one of these models, so the wire format is
validated in exactly one place. Workflows import this module through the sandbox, so it must
stay free of side effects at import time.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_serializer, model_validator

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Accept '90s', '5m', '1h30m', '2d' (what people write) besides ISO 8601 and seconds."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and _DURATION_PART.sub("", text) == "" and _DURATION_PART.match(text):
            return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)))
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

#: Floors that keep a release file from flooding its own history (issue "scale": a 1 s reminder
#: with a large summary once hit Temporal's history limit and left the release stuck).
MIN_REMIND_AFTER = timedelta(minutes=1)
MIN_GATE_TIMEOUT = timedelta(minutes=1)
MIN_ANALYSIS_INTERVAL = timedelta(seconds=1)


#: How many entries a list in workflow state keeps (the newest); the rest are counted, and every
#: one of them is in the signed log. Keeps a long-lived release's state and queries bounded.
STATE_LIST_LIMIT = 200
NOTICE_LIST_LIMIT = 20
NOTICE_TEXT_LIMIT = 1000


def append_bounded(owner: BaseModel, name: str, item: Any, limit: int = STATE_LIST_LIMIT) -> None:
    """``owner.<name>.append(item)``, dropping the oldest beyond ``limit`` into ``<name>_dropped``."""
    items = getattr(owner, name)
    items.append(item)
    if len(items) > limit:
        extra = len(items) - limit
        del items[:extra]
        setattr(owner, f"{name}_dropped", getattr(owner, f"{name}_dropped", 0) + extra)


class Strict(BaseModel):
    """Base for user-written documents: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Open(BaseModel):
    """Base for internal payloads: tolerant of fields added by newer versions (replay safety)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def check_digest(value: str) -> str:
    if not DIGEST_RE.match(value):
        raise ValueError("must be a digest of the form sha256:<64 lowercase hex characters>")
    return value


def check_email(value: str) -> str:
    if not EMAIL_RE.match(value):
        raise ValueError("must be an email address (the person's canonical identity)")
    return value.lower()


# --------------------------------------------------------------------------- phases


class Phase(str, Enum):
    building = "building"
    testing = "testing"
    verifying = "verifying"
    deciding = "deciding"
    awaiting_approval = "awaiting_approval"
    waiting_for_window = "waiting_for_window"
    promoting = "promoting"
    canary = "canary"
    held = "held"
    rolling_back = "rolling_back"
    succeeded = "succeeded"
    rolled_back = "rolled_back"
    rejected = "rejected"
    denied = "denied"
    failed = "failed"
    aborted = "aborted"

    @property
    def is_final(self) -> bool:
        return self in FINAL_PHASES


FINAL_PHASES = {
    Phase.succeeded,
    Phase.rolled_back,
    Phase.rejected,
    Phase.denied,
    Phase.failed,
    Phase.aborted,
}

Channel = Literal["slack", "jira", "cli", "api"]
Decision = Literal["approve", "reject", "revoke"]

# --------------------------------------------------------------------------- release file


class AgentInfo(Strict):
    """The software agent that asked for the change, and the human it acts for is `requested_by`."""

    id: str
    model: str | None = None
    prompt_sha256: str | None = None


class ChangeInfo(Strict):
    summary: str = Field(max_length=4000, description="shown in every notice; the diff itself is derived from git")
    paths: list[str] = Field(default_factory=list, max_length=10_000)
    commit: str | None = None
    co_requested_by: list[str] = Field(default_factory=list)
    repository: str | None = Field(default=None, description="local Git checkout (relative to the release file) signoff derives paths and authors from")
    base: str | None = Field(default=None, description="compare against this commit (default: the commit's first parent)")

    @field_validator("co_requested_by")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        return [check_email(x) for x in v]


class BuildSpec(Strict):
    command: str
    output: str = Field(description="path (relative to the working directory) of the built artifact")
    timeout_seconds: int = Field(default=600, gt=0)
    network: bool = Field(default=False, description="ask for the network (a package download); the policy decides")


class TestSpec(Strict):
    __test__ = False  # not a pytest class
    command: str
    junit: str | None = Field(default=None, description="JUnit XML report written by the command")
    coverage: float | None = Field(default=None, ge=0, le=100)
    coverage_report: str | None = Field(default=None, description="Cobertura XML or coverage.py JSON written by the command")
    rerun_failures: int = Field(default=0, ge=0, le=5, description="re-run the tests up to N times when some fail; passing on a re-run is flaky")
    timeout_seconds: int = Field(default=900, gt=0)
    network: bool = Field(default=False, description="ask for the network; the policy decides")


class ScanSpec(Strict):
    """A scanner the release runs on its workspace (in the sandbox); it writes SARIF, any tool."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")
    command: str
    sarif: str = Field(description="the SARIF file the command writes (relative to the working directory)")
    timeout_seconds: int = Field(default=600, gt=0)


class SbomSpec(Strict):
    """A CycloneDX JSON SBOM of the artifact: read from the build's workspace (`path`), written
    there first by `command` (e.g. `cyclonedx-py requirements …`), run in the sandbox."""

    path: str
    command: str | None = None
    timeout_seconds: int = Field(default=300, gt=0)


class ProvenanceSpec(Strict):
    bundle: str = Field(description="Sigstore bundle file (relative to the release file)")
    artifact: str | None = Field(default=None, description="file to verify; default: the built artifact")
    identity: str
    issuer: str
    offline: bool = True
    staging: bool = False
    trust_config: str | None = None
    attestations: list[str] = Field(default_factory=list, description="DSSE attestation bundles")
    builder_allow_list: list[str] = Field(default_factory=list)


class DeploySpec(Strict):
    target: Literal["local", "gitops", "command", "flag"] = "local"
    settings: dict[str, Any] = Field(default_factory=dict)


class GateSpec(Strict):
    """A human approval gate. The policy may tighten it; a release file can never loosen it."""

    name: str
    required: int = Field(default=1, ge=1)
    from_groups: list[str] = Field(default_factory=list)
    quotas: dict[str, int] = Field(default_factory=dict)
    timeout: Duration = timedelta(hours=24)
    remind_after: Duration | None = None
    escalate_to: str | None = None
    escalate_after: Duration | None = None
    veto: bool = True
    channels: list[Channel] = Field(default_factory=lambda: ["slack", "jira", "cli"])
    min_signed: int = Field(default=0, ge=0, description="approvals that must be signed by the person (key or OIDC), not only chat clicks")

    @model_validator(mode="after")
    def _consistent(self) -> "GateSpec":
        if sum(self.quotas.values()) > self.required:
            self.required = sum(self.quotas.values())
        # every reminder, escalation and expiry is an event in the release's history: a floor
        # keeps a fast-reminding gate from filling it
        for name, floor in (("timeout", MIN_GATE_TIMEOUT), ("remind_after", MIN_REMIND_AFTER), ("escalate_after", MIN_REMIND_AFTER)):
            value = getattr(self, name)
            if value is not None and value < floor:
                raise ValueError(f"gate {self.name}'s {name} is {value}; it must be at least {floor} (every reminder is recorded)")
        return self


class Condition(Strict):
    """A structured comparison; no user string is ever evaluated."""

    less_than: float | None = None
    less_than_or_equal: float | None = None
    greater_than: float | None = None
    greater_than_or_equal: float | None = None
    in_range: tuple[float, float] | None = None
    equals: float | None = None

    @model_validator(mode="after")
    def _one(self) -> "Condition":
        if all(getattr(self, f) is None for f in type(self).model_fields):
            raise ValueError("a condition needs one comparison such as less_than or in_range")
        return self


class JudgeSpec(Strict):
    """Kayenta-style statistical comparison of canary vs baseline (Mann-Whitney U)."""

    baseline_query: str
    direction: Literal["increase", "decrease", "either"] = "increase"
    allowed_effect: float = Field(default=0.0, ge=0)
    pass_score: float = 95.0
    marginal_score: float = 75.0
    window: Duration = timedelta(minutes=2)
    step: Duration = timedelta(seconds=2)
    alpha: float = 0.05


class AnalysisSpec(Strict):
    query: str
    interval: Duration = timedelta(seconds=10)
    count: int = Field(default=1, ge=0, le=10_000, description="0 = run until the step/canary ends")

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, value: timedelta) -> timedelta:
        if value < MIN_ANALYSIS_INTERVAL:
            raise ValueError(f"an analysis interval of {value} is too short; it must be at least {MIN_ANALYSIS_INTERVAL} (each measurement is recorded)")
        return value
    initial_delay: Duration = timedelta(0)
    success: Condition | None = None
    failure: Condition | None = None
    failure_limit: int = Field(default=0, ge=0)
    inconclusive_limit: int = Field(default=0, ge=0)
    consecutive_error_limit: int = Field(default=4, ge=0)
    dry_run: bool = False
    judge: JudgeSpec | None = None


class PauseSpec(Strict):
    duration: Duration | None = None


class CanaryStep(Strict):
    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: PauseSpec | None = None
    analysis: list[str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "CanaryStep":
        given = [n for n in ("set_weight", "pause", "analysis") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("each canary step is exactly one of set_weight, pause or analysis")
        return self


class CanarySpec(Strict):
    steps: list[CanaryStep] = Field(default_factory=list)
    analyses: dict[str, AnalysisSpec] = Field(default_factory=dict)
    background: list[str] = Field(default_factory=list)
    inconclusive_deadline: Duration = timedelta(minutes=30)
    on_inconclusive: Literal["rollback", "hold"] | None = None
    on_failure: Literal["rollback", "hold"] = Field(
        default="rollback", description="hold: a failed analysis sets weight 0 and asks the approvers to roll back or forward, instead of redeploying the previous digest"
    )
    hold_deadline: Duration = Field(default=timedelta(hours=1), description="how long a held release waits for people before the policy default applies")

    @model_serializer(mode="wrap")
    def _without_new_defaults(self, handler: Any) -> Any:
        """on_failure / hold_deadline appear only when set: a release file that does not use them
        serialises (and so hashes, for start proofs and the plan) as it did before they existed,
        so releases in flight across an upgrade keep verifying."""
        doc = handler(self)
        if isinstance(doc, dict):
            for name in ("on_failure", "hold_deadline"):
                if name in doc and getattr(self, name) == type(self).model_fields[name].default:
                    del doc[name]
        return doc

    @model_validator(mode="after")
    def _names_known(self) -> "CanarySpec":
        names = set(self.analyses)
        for step in self.steps:
            for n in step.analysis or []:
                if n not in names:
                    raise ValueError(f"canary step names analysis {n!r}, which is not defined under analyses")
        for n in self.background:
            if n not in names:
                raise ValueError(f"background analysis {n!r} is not defined under analyses")
        return self


class ReleaseFile(Strict):
    """What a person or an agent writes to ask for a release (YAML)."""

    service: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    requested_by: str
    environment: str = "production"
    agent: AgentInfo | None = None
    change: ChangeInfo
    artifact: str | None = None
    build: BuildSpec | None = None
    test: TestSpec | None = None
    scans: list[ScanSpec] = Field(default_factory=list)
    sbom: SbomSpec | None = None
    provenance: ProvenanceSpec | None = None
    deploy: DeploySpec = Field(default_factory=DeploySpec)
    gates: list[GateSpec] = Field(default_factory=list)
    canary: CanarySpec | None = None
    remediation_runbook: str | None = None
    working_dir: str | None = None

    @field_validator("requested_by")
    @classmethod
    def _requester(cls, v: str) -> str:
        return check_email(v)

    @field_validator("artifact")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        return None if v is None else check_digest(v)

    @model_validator(mode="after")
    def _artifact_or_build(self) -> "ReleaseFile":
        if self.artifact is None and self.build is None:
            raise ValueError("give either artifact (a sha256 digest) or a build step that produces it")
        return self


# --------------------------------------------------------------------------- workflow input


class StartRelease(Open):
    """Workflow input: the validated release file plus where it came from."""

    release_id: str
    spec: ReleaseFile
    base_dir: str = Field(description="absolute directory of the release file; relative paths resolve here")
    directory_path: str | None = Field(default=None, description="ignored: the worker's setting decides (kept for old histories)")
    policy_dir: str | None = Field(default=None, description="ignored: the worker's setting decides (kept for old histories)")
    started_by: str | None = None
    search_attributes: bool = True
    proof: Proof | None = Field(default=None, description="the starter's signed start_release request")


# --------------------------------------------------------------------------- approvals


class Proof(Open):
    """Who sent a request, provably: a DSSE envelope over the canonical request signed by the
    principal's registered key (or the gateway's, attesting a Slack/Jira action), or an OIDC ID
    token whose `nonce` is the request's digest, next to that request (signoff/trust/proofs.py)."""

    envelope: dict[str, Any] | None = None
    oidc_token: str | None = None
    request: dict[str, Any] | None = None


class ApprovalAttempt(Open):
    """The payload of the submit_approval Update. Who it comes from is proven by `proof`; the
    workflow verifies it against the worker's registry and refuses anything else."""

    release_id: str
    gate: str | None = None
    identity: str
    channel: Channel
    decision: Decision = "approve"
    reason: str = ""
    digest: str | None = Field(default=None, description="the artifact digest the person saw")
    plan: str | None = Field(default=None, description="the plan hash the person saw (spec + artifact, see ReleaseStatus.plan_sha256)")
    external_ref: str | None = Field(default=None, description="Slack action ts / Jira delivery id")
    directory_sha256: str | None = Field(
        default=None,
        description="ignored since proofs (kept so older histories replay): a caller never chooses the directory snapshot",
    )
    proof: Proof | None = None


class ApprovalRecord(Open):
    by: str
    channel: str
    at: datetime
    reason: str = ""
    method: str = Field(default="", description="how it was proven: key:<keyid>, oidc:<issuer>, gateway:<id>")


class RefusalRecord(Open):
    by: str
    channel: str
    at: datetime | None = None
    decision: str = "approve"
    reason: str


class GateStatus(Open):
    name: str
    state: Literal["pending", "open", "approved", "rejected", "expired", "closed"] = "pending"
    required: int = 1
    quotas: dict[str, int] = Field(default_factory=dict)
    from_groups: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    min_signed: int = 0
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    refusals: list[RefusalRecord] = Field(default_factory=list)
    refusals_dropped: int = Field(default=0, description="older refusals not kept here (they are in the signed log)")
    rejections: list[ApprovalRecord] = Field(default_factory=list)
    revocations: list[ApprovalRecord] = Field(default_factory=list)
    opened_at: datetime | None = None
    deadline: datetime | None = None
    closed_at: datetime | None = None
    reminders_sent: int = 0
    escalated: bool = False
    directory_sha256: str | None = None
    progress: str = ""
    slack_ts: str | None = None
    slack_channel: str | None = None
    jira_key: str | None = None


class ApprovalResult(Open):
    accepted: bool
    reason: str
    gate: GateStatus | None = None


# --------------------------------------------------------------------------- canary


class Measurement(Open):
    metric: str
    value: float | None = None
    verdict: Literal["successful", "failed", "inconclusive", "error"]
    at: datetime | None = None
    message: str = ""
    dry_run: bool = False
    step: int | None = None
    query: str = Field(default="", description="the PromQL query as sent, with the release's placeholders filled in")
    condition: str = Field(default="", description="the conditions judged, with their thresholds (success: < 0.05; failure: >= 0.1)")

    def explain(self) -> str:
        """Why this verdict, in one line: query, value, condition and threshold, verdict."""
        value = "no data" if self.value is None else f"{self.value:g}"
        parts = [f"{self.metric}: {self.verdict}", f"value {value}"]
        if self.condition:
            parts.append(f"condition {self.condition}")
        if self.query:
            parts.append(f"query `{self.query}`")
        if self.message:
            parts.append(self.message)
        return "; ".join(parts)


class CanaryStatus(Open):
    step: int = 0
    weight: int = 0
    analyses: list[Measurement] = Field(default_factory=list)
    analyses_dropped: int = Field(default=0, description="older measurements not kept here (they are in the signed log)")
    paused: bool = False
    pause_reason: str = ""
    verdict: str | None = None


# --------------------------------------------------------------------------- status


class TestSummary(Open):
    __test__ = False
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    failures: list[str] = Field(default_factory=list)
    coverage: float | None = None
    profile: str | None = Field(default=None, description="the sandbox profile the tests ran in")
    flaky: list[str] = Field(default_factory=list, description="tests that failed, then passed on a re-run")
    runs: int = 1


class ProvenanceResult(Open):
    verified: bool
    reason: str = ""
    identity: str | None = None
    issuer: str | None = None
    bundle_sha256: str | None = None
    artifact_digest: str | None = None
    attestations: list[dict[str, Any]] = Field(default_factory=list)


class Freeze(Open):
    """A change freeze (signoff freeze start): promotions in its scope wait until it ends."""

    id: str
    by: str
    reason: str
    service: str | None = Field(default=None, description="only this service (None: every service)")
    environment: str | None = Field(default=None, description="only this environment (None: every environment)")
    started_at: datetime
    until: datetime | None = Field(default=None, description="ends by itself at this time (None: until someone ends it)")
    pause_canaries: bool = False
    ended_at: datetime | None = None
    ended_by: str | None = None


class PlanSummary(Open):
    """What will run if the release is approved, as approvers see it (Slack, Jira, release status)."""

    build_command: str | None = None
    test_command: str | None = None
    scanners: list[str] = Field(default_factory=list)
    deploy_target: str = "local"
    deploy_settings: dict[str, Any] = Field(default_factory=dict, description="the target's commands and settings")
    canary: list[str] = Field(default_factory=list, description="the canary steps, in order")
    on_failure: str = "rollback"
    rollback_target: str | None = Field(default=None, description="the digest serving now, which a rollback restores")


class WindowState(Open):
    """Whether promotion is open now, for one release: the windows and freezes that apply."""

    open: bool = True
    reasons: list[str] = Field(default_factory=list, description="why it is closed (deny windows, freezes, outside allow windows)")
    windows: list[str] = Field(default_factory=list, description="the windows that apply to this service and environment")
    freezes: list[str] = Field(default_factory=list, description="the freezes in force")
    next_open: datetime | None = Field(default=None, description="when it opens by itself (None: only a person, or the end of a freeze)")
    at: datetime | None = None


class HoldStatus(Open):
    """A failed canary held at weight 0 (canary.on_failure: hold), waiting for people to decide."""

    reason: str
    since: datetime
    deadline: datetime
    default: Literal["rollback", "forward"] = "rollback"
    decision: Literal["rollback", "forward"] | None = None
    decided_by: str | None = Field(default=None, description="the person, or 'policy default' at the deadline")
    decision_reason: str = ""


class WindowOverride(Open):
    """A person's signed override of a closed window or freeze, as recorded."""

    by: str
    reason: str
    channel: str = "cli"
    at: datetime


class PolicyDecision(Open):
    tier: Literal["low", "medium", "high"] = "medium"
    gates: list[GateSpec] = Field(default_factory=list)
    denials: list[str] = Field(default_factory=list)
    policy_sha256: str = ""
    reasons: list[str] = Field(default_factory=list)
    on_inconclusive: Literal["rollback", "hold"] = "rollback"
    override_groups: list[str] = Field(default_factory=list, description="who may override a closed window or a freeze for this release")
    hold_default: Literal["rollback", "forward"] = Field(default="rollback", description="what a held canary does when nobody decides by its deadline")


class ReleaseStatus(Open):
    release_id: str
    service: str
    environment: str = "production"
    artifact_digest: str | None = None
    previous_digest: str | None = None
    phase: Phase = Phase.building
    tier: str | None = None
    requested_by: str
    agent: AgentInfo | None = None
    change_summary: str = ""
    gates: list[GateStatus] = Field(default_factory=list)
    canary: CanaryStatus | None = None
    tests: TestSummary | None = None
    provenance: ProvenanceResult | None = None
    policy: PolicyDecision | None = None
    outcome: str | None = None
    reason: str | None = None
    incident: str | None = None
    remediation: str | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    history_dropped: int = 0
    started_by: dict[str, Any] | None = Field(default=None, description="the authenticated principal that started it")
    refusals: list[RefusalRecord] = Field(default_factory=list, description="refused starts, promotes and aborts (gate refusals are in gates)")
    refusals_dropped: int = 0
    sandbox: dict[str, str] = Field(default_factory=dict, description="the sandbox profile each release command ran in (build, test)")
    change: ChangeFacts | None = Field(default=None, description="what the commit really changes (from Git), when the release names its repository")
    scans: list[ScanResult] = Field(default_factory=list, description="what each scanner found (SARIF), in the sandbox")
    sbom: SbomResult | None = Field(default=None, description="the artifact's CycloneDX SBOM, as read by signoff")
    planned_sha256: str | None = Field(default=None, description="hash of what the policy decided for this release; equals the `plan_sha256` of `signoff release plan` when it went as planned")
    plan_sha256: str | None = Field(default=None, description="what approvals bind: the evaluated release spec plus the artifact digest")
    plan: PlanSummary | None = Field(default=None, description="what will run once approved: commands, deploy target, canary plan, rollback target")
    window: WindowState | None = Field(default=None, description="deploy windows and freezes, as last checked before promotion")
    window_override: WindowOverride | None = None
    hold: HoldStatus | None = Field(default=None, description="set when a failed canary is held instead of rolled back")
    started_at: datetime | None = None
    updated_at: datetime | None = None
    workflow_id: str | None = None
    run_id: str | None = None


# --------------------------------------------------------------------------- activity payloads


    def for_notice(self) -> "ReleaseStatus":
        """A copy small enough to ride in every notice (each one is an activity input in the
        release's history): the summary cut to NOTICE_TEXT_LIMIT characters, lists to their last
        NOTICE_LIST_LIMIT entries. Notices link to the full record."""
        copy = self.model_copy(deep=True)
        if len(copy.change_summary) > NOTICE_TEXT_LIMIT:
            copy.change_summary = copy.change_summary[: NOTICE_TEXT_LIMIT - 1] + "…"
        copy.history = copy.history[-NOTICE_LIST_LIMIT:]
        copy.refusals = copy.refusals[-NOTICE_LIST_LIMIT:]
        for gate in copy.gates:
            gate.refusals = gate.refusals[-NOTICE_LIST_LIMIT:]
        if copy.canary is not None:
            copy.canary.analyses = copy.canary.analyses[-NOTICE_LIST_LIMIT:]
        return copy

class CommandRequest(Open):
    """Run a user-configured command (build or test) in the sandbox (activities/sandbox.py)."""

    release_id: str
    command: str
    workdir: str
    timeout_seconds: int = 600
    env: dict[str, str] = Field(default_factory=dict)
    checkout: str | None = Field(default=None, description="the release's source tree; workdir and every path must lie inside it")
    facts: dict[str, Any] = Field(default_factory=dict, description="input of the policy's sandbox_profile decision")


class BuildResult(Open):
    digest: str
    artifact_path: str
    output_tail: str = ""
    provenance_path: str | None = None
    profile: str = Field(default="", description="the sandbox profile the build ran in (hermetic, fetch, unconfined)")
    provenance_envelope: dict[str, Any] | None = Field(default=None, description="the signed SLSA provenance (DSSE)")
    duration_seconds: float = Field(default=0.0, description="how long the build command ran (counts against an agent's build-minute budget)")


class TestRequest(CommandRequest):
    __test__ = False
    junit: str | None = None
    coverage: float | None = None
    coverage_report: str | None = None
    rerun_failures: int = 0


class ApprovalEvidence(Open):
    gate: str
    identity: str
    proof: Proof


class Evidence(Open):
    """What the deploy activity re-verifies before it ships (DESIGN.md, "The actuator checks the
    evidence"): the signed start, the facts the policy decided on, and the signed approvals."""

    release_id: str
    spec: ReleaseFile
    base_dir: str | None = Field(default=None, description="where the release file's relative paths (change.repository) resolve")
    start_proof: Proof | None = None
    tests: TestSummary | None = None
    provenance: ProvenanceResult | None = None
    scans: list[ScanResult] = Field(default_factory=list)
    sbom: SbomResult | None = None
    approvals: list[ApprovalEvidence] = Field(default_factory=list)
    plan_sha256: str | None = Field(default=None, description="set when the release's approvals bind the plan hash; each must then name it")


class ScanRequest(CommandRequest):
    name: str
    sarif: str


class Finding(Open):
    rule: str
    level: Literal["error", "warning", "note", "none"] = "warning"
    message: str = ""
    location: str = ""


class ScanResult(Open):
    """A scanner's SARIF, counted: what the policy decides on (`findings`)."""

    name: str
    profile: str = ""
    errors: int = 0
    warnings: int = 0
    notes: int = 0
    findings: list[Finding] = Field(default_factory=list)
    sarif_sha256: str = ""


class SbomRequest(CommandRequest):
    path: str


class Component(Open):
    name: str
    version: str = ""
    licenses: list[str] = Field(default_factory=list)
    supplier: str = ""


class SbomResult(Open):
    sha256: str
    format: str = "CycloneDX"
    components: list[Component] = Field(default_factory=list)


class DeployRequest(Open):
    release_id: str
    service: str
    digest: str
    weight: int = 100
    target: DeploySpec = Field(default_factory=DeploySpec)
    evidence: Evidence | None = None


class RollbackRequest(Open):
    release_id: str
    service: str
    to_digest: str
    target: DeploySpec = Field(default_factory=DeploySpec)


class DeploymentState(Open):
    service: str
    stable: str | None = None
    canary: str | None = None
    weight: int = 0
    detail: dict[str, Any] = Field(default_factory=dict)


class AnalysisRequest(Open):
    release_id: str
    name: str
    spec: AnalysisSpec
    service: str
    digest: str
    version: str = ""
    step: int | None = None


class StartAnalysis(Open):
    """Input of one run of AnalysisWorkflow: what to measure, and the state carried from the run
    before (continue-as-new). `state` is AnalysisState's counters and phase (workflows/canary.py)."""

    request: AnalysisRequest
    measurement_timeout: timedelta = timedelta(seconds=30)
    continue_every: int = Field(default=250, ge=1, description="measurements per run before continue-as-new (Temporal may suggest it sooner)")
    report_every: timedelta = Field(default=timedelta(seconds=60), description="the parent hears of a steady analysis this often")
    state: dict[str, Any] | None = Field(default=None, description="carried counters; None on the first run")
    delay: timedelta = Field(default=timedelta(0), description="wait before the next measurement (carried)")
    measured_total: int = 0
    runs: int = 1
    last: Measurement | None = None
    reported_verdict: str | None = None


class AnalysisReport(Open):
    """Signal from an AnalysisWorkflow to its parent: the newest measurements since its last report
    (at most a few; `skipped` counts the others, which are not kept anywhere but the child's history)."""

    analysis_id: str
    name: str
    measurements: list[Measurement] = Field(default_factory=list)
    skipped: int = 0


class AnalysisOutcome(Open):
    """Result of an AnalysisWorkflow chain: its phase, the counters that decided it, the last
    measurement; `stopped` when the parent ended it (the canary closed) rather than the rules."""

    name: str
    phase: Literal["running", "successful", "failed", "inconclusive", "error"]
    state: dict[str, Any]
    last: Measurement | None = None
    measured_total: int = 0
    runs: int = 1
    stopped: bool = False


class OidcIdentity(Strict):
    """A principal's short-lived identity: ID tokens from `issuer` whose `sub` is `subject`."""

    issuer: str
    subject: str


class Person(Strict):
    email: str
    name: str = ""
    slack_user_id: str | None = None
    jira_account_id: str | None = None
    keys: list[str] = Field(default_factory=list, description="registered public keys (PEM or OpenSSH ed25519)")
    oidc: list[OidcIdentity] = Field(default_factory=list)


class AgentEntry(Strict):
    """A software agent in the worker's agent registry: who it acts for and what it may touch."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    owner: str = Field(description="the human the agent acts for; the requester of its releases")
    status: Literal["active", "suspended"] = "active"
    services: list[str] = Field(default_factory=lambda: ["*"])
    environments: list[str] = Field(default_factory=lambda: ["*"])
    groups: list[str] = Field(default_factory=list, description="runbook groups the agent may run as")
    keys: list[str] = Field(default_factory=list)
    oidc: list[OidcIdentity] = Field(default_factory=list)
    budgets: dict[str, float] = Field(default_factory=dict)

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        return check_email(v)


class GatewayEntry(Strict):
    """The approvals gateway as a principal: its attestation keys."""

    id: str
    keys: list[str] = Field(default_factory=list)


class DirectorySnapshot(Open):
    """Group membership at one moment, with the hash of the file it came from."""

    sha256: str
    groups: dict[str, list[str]] = Field(default_factory=dict)
    people: dict[str, Person] = Field(default_factory=dict)

    def groups_of(self, email: str) -> set[str]:
        return {g for g, members in self.groups.items() if email.lower() in members}


class DecisionInput(Open):
    """One decision to append to the signed log (see activities/audit.py)."""

    kind: str
    outcome: str
    subject_name: str
    subject_digest: str
    reasons: list[str] = Field(default_factory=list)
    actor: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(default_factory=dict)
    workflow_id: str
    run_id: str
    at: datetime
    sequence: int = Field(description="per-workflow decision number; with workflow_id makes the record idempotent")


class NotifyRequest(Open):
    """A message for people: Slack notifications and Jira tickets share this."""

    release_id: str
    kind: str
    text: str
    status: ReleaseStatus | None = None
    gate: str | None = None
    mention: list[str] = Field(default_factory=list)
    channel: str | None = Field(default=None, description="post here instead of the service's channel")
    thread_ts: str | None = Field(default=None, description="reply in this thread (runbook progress)")


class BuildRequest(CommandRequest):
    output: str


class TargetRequest(Open):
    service: str
    target: DeploySpec = Field(default_factory=DeploySpec)


class PathChange(Open):
    path: str
    status: str = Field(description="git's status letter: A, M, D, R (renamed), C, T")


class ChangeFacts(Open):
    """What a commit really changes, read from Git by signoff (never taken from the release file)."""

    repository: str
    commit: str
    base: str
    paths: list[PathChange] = Field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    commits: int = 0
    authors: list[str] = Field(default_factory=list)
    committers: list[str] = Field(default_factory=list)
    signatures: list[str] = Field(default_factory=list, description="git's %G? per commit (G good, U unknown validity, N none, …)")
    signed: bool = False


class ChangeRequest(Open):
    repository: str
    commit: str
    base: str | None = None
    base_dir: str


class ProvenanceRequest(Open):
    release_id: str
    spec: ProvenanceSpec
    base_dir: str
    artifact_path: str | None = None
    digest: str


class PolicyRequest(Open):
    """Facts about the change; the policy's input document (see policies/README.md)."""

    input: dict[str, Any]
    policy_dir: str | None = None


class GateNotice(Open):
    """A gate opened, changed or closed: Slack posts/updates its message, Jira its ticket."""

    status: ReleaseStatus
    gate: GateStatus
    event: Literal["opened", "progress", "reminder", "escalation", "closed"]
    escalate_to: str | None = None
    directory_path: str | None = None


class TrustSnapshot(Open):
    """The worker's principals at one moment (directory people and groups, and the gateways'
    keys): what a workflow verifies proofs against between refreshes."""

    directory: DirectorySnapshot
    gateways: list[GatewayEntry] = Field(default_factory=list)
    registry_sha256: str = ""


class AuthRequest(Open):
    """Input of the `authenticate_request` local activity: a proof and what it must be bound to."""

    proof: Proof | None = None
    expect: dict[str, Any] = Field(default_factory=dict)
    at: datetime | None = Field(default=None, description="judge expiry at this time (a start: the workflow's start); default now")


class AuthResult(Open):
    """Who proved the request, or why not, with the directory as it is now."""

    ok: bool
    reason: str = ""
    principal: str = ""
    kind: str = ""
    id: str = ""
    identity: str = Field(default="", description="the person (or agent) the decision is attributed to")
    method: str = ""
    channel: str = ""
    nonce: str = ""
    request: dict[str, Any] = Field(default_factory=dict)
    agent: AgentEntry | None = None
    requester: str | None = Field(default=None, description="start: the human the release is for (the agent's owner)")
    snapshot: DirectorySnapshot | None = None


class ChatRef(Open):
    channel: str | None = None
    ts: str | None = None
    key: str | None = None


# --------------------------------------------------------------------------- runbooks


class StartRunbook(Open):
    """Workflow input of a runbook run: who asked, for what, through which channel."""

    run_id: str
    runbook: str
    params: dict[str, Any] = Field(default_factory=dict)
    requested_by: str
    channel: Channel = "cli"
    dry_run: bool = False
    directory_path: str | None = Field(default=None, description="ignored: the worker's setting decides (kept for old histories)")
    reply_to: dict[str, str] = Field(default_factory=dict, description="chat thread to post progress in (channel, ts)")
    triggered_by_release: str | None = Field(default=None, description="ignored since proofs: a remediation is known by its parent workflow")
    search_attributes: bool = True
    proof: Proof | None = None


class RunbookStepStatus(Open):
    name: str
    action: str
    state: Literal["pending", "running", "succeeded", "failed", "dry_run", "skipped"] = "pending"
    detail: str = ""


class RunbookCheckStatus(Open):
    name: str
    stage: Literal["precheck", "postcheck"]
    state: Literal["pending", "running", "successful", "failed", "inconclusive", "error"] = "pending"
    measurements: list[Measurement] = Field(default_factory=list)
    measurements_dropped: int = Field(default=0, description="older measurements not kept here (a check is bounded; this counts the rest)")
    detail: str = ""


class RunbookStatus(Open):
    run_id: str
    runbook: str
    version: str = ""
    sha256: str = ""
    requested_by: str
    channel: str = "cli"
    dry_run: bool = False
    phase: Literal[
        "starting", "refused", "awaiting_approval", "prechecks", "running", "postchecks", "succeeded", "failed", "rejected"
    ] = "starting"
    params: dict[str, Any] = Field(default_factory=dict)
    certified_by: str | None = None
    steps: list[RunbookStepStatus] = Field(default_factory=list)
    checks: list[RunbookCheckStatus] = Field(default_factory=list)
    gates: list[GateStatus] = Field(default_factory=list)
    outcome: str | None = None
    reason: str | None = None
    incident: str | None = None
    workflow_id: str | None = None


# --------------------------------------------------------------------------- agents as principals


class AgentControl(Open):
    """`signoff agent suspend|resume`: one signed request, decided by policy (AgentControlWorkflow)."""

    control_id: str
    agent_id: str
    action: Literal["suspend", "resume"]
    identity: str = Field(description="the person asking (on-call or SRE, as the policy says)")
    reason: str = ""
    channel: str = "cli"
    proof: Proof | None = None


class AgentControlResult(Open):
    control_id: str
    agent_id: str
    action: Literal["suspend", "resume"]
    accepted: bool
    reason: str
    by: str
    status: str = Field(default="", description="the agent's standing after the request")
    stopping: list[str] = Field(default_factory=list, description="in-flight releases told to stop (suspend)")


class AgentStandingChange(Open):
    """What `set_agent_standing` writes: the new status and who decided it, under which request."""

    agent_id: str
    status: Literal["active", "suspended"]
    by: str
    reason: str = ""
    control_id: str


class AgentSuspended(Open):
    """The nudge a suspension sends each in-flight release; the release checks the worker's
    registry itself before it stops, so a forged nudge stops nothing."""

    agent_id: str
    control_id: str


class DriftCheck(Open):
    """One scheduled drift check (the `signoff-drift` Temporal Schedule's action)."""

    runbook: str | None = Field(default=None, description="a certified runbook to start for each new drift (SIGNOFF_DRIFT_RUNBOOK)")
    search_attributes: bool = True


class DriftReport(Open):
    findings: list[dict[str, Any]] = Field(default_factory=list)
