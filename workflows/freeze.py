"""FreezeWorkflow: the keeper of change freezes (workflow id `signoff-freezes`, one per task queue).

`signoff freeze start/end` are Updates on it, each with the person's signed proof; the policy
(data.signoff.freeze.decision) decides who may. Every freeze and every refusal is a signed
decision record. Releases waiting before promotion register with the `watch` signal and get a
`freezes_changed` signal when a freeze starts or ends, so they re-check at once instead of
polling. The freezes in force are also in the keeper's memo: releases read them with a
describe, which the server answers alone, however busy the worker is. The history stays short:
the keeper continues as new when Temporal suggests it.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from signoff.models import AuthRequest, AuthResult, Freeze, NotifyRequest, Proof
    from signoff.trust.proofs import parse_time

from workflows.outbox import DecisionLog, Outbox

#: With no freeze in force for this long, the keeper ends (a new one starts when needed).
IDLE = timedelta(days=1)

#: Scope of every freeze proof: what the signed request names as its subject.
SUBJECT = "freezes"


@workflow.defn(name="FreezeWorkflow")
class FreezeWorkflow:
    @workflow.init
    def __init__(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.freezes: list[Freeze] = [Freeze.model_validate(f) for f in state.get("freezes", [])]
        self.watchers: list[str] = list(state.get("watchers", []))
        self.used_nonces: set[str] = set(state.get("nonces", []))
        self.audit = Outbox("audit")
        self.slack = Outbox("slack")
        self.decisions = DecisionLog(self.audit, subject_name=SUBJECT, subject_digest=lambda: "sha256:" + hashlib.sha256(SUBJECT.encode()).hexdigest())
        self.decisions.sequence = int(state.get("sequence", 0))
        self.pending_signals = 0
        self.changed = False
        self.done = False
        # Patch: the freezes in force are also published in the keeper's memo, so releases read
        # them with a server-side describe instead of a query that waits for a busy worker.
        self.memo = workflow.patched("freezes-memo")

    @workflow.run
    async def run(self, state: dict[str, Any] | None) -> dict[str, Any]:
        """Keep freezes until Temporal suggests a fresh history (continue as new with the freezes in
        force), or until nothing has been frozen for `idle` (then end; the next freeze or waiting
        release starts a new keeper)."""
        idle = timedelta(seconds=float((state or {}).get("idle_seconds", IDLE.total_seconds())))
        drains = [asyncio.create_task(box.run(lambda: self.done)) for box in (self.audit, self.slack)]
        self.publish()
        while not workflow.info().is_continue_as_new_suggested():
            self.changed = False
            try:
                await workflow.wait_condition(lambda: self.changed or workflow.info().is_continue_as_new_suggested(), timeout=idle)
            except asyncio.TimeoutError:
                if not self.active() and workflow.all_handlers_finished():
                    break
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and self.audit.drained() and self.slack.drained() and not self.pending_signals)
        self.done = True
        await asyncio.gather(*drains)
        if not workflow.info().is_continue_as_new_suggested():
            return {"freezes": [f.model_dump(mode="json") for f in self.freezes]}
        workflow.continue_as_new(
            {
                "freezes": [f.model_dump(mode="json") for f in self.active()],
                "watchers": self.watchers,
                "nonces": sorted(self.used_nonces),
                "sequence": self.decisions.sequence,
                "idle_seconds": idle.total_seconds(),
            }
        )

    def active(self) -> list[Freeze]:
        now = workflow.now()
        return [f for f in self.freezes if f.ended_at is None and (f.until is None or now < f.until)]

    def publish(self) -> None:
        """The freezes in force, in the memo (`freezes`): what `load_windows` reads (one whose
        `until` passes later is dropped by the release, `freezes_for`)."""
        if self.memo:
            workflow.upsert_memo({"freezes": [f.model_dump(mode="json") for f in self.active()]})

    @workflow.query(name="freezes")
    def query_freezes(self) -> list[dict[str, Any]]:
        return [f.model_dump(mode="json") for f in self.active()]

    @workflow.signal(name="watch")
    def watch(self, release_id: str) -> None:
        if release_id not in self.watchers:
            self.watchers.append(release_id)

    @workflow.update(name="start_freeze")
    async def start_freeze(self, request: dict[str, Any]) -> dict[str, Any]:
        who, reason = str(request.get("identity", "")).lower(), str(request.get("reason", "")).strip()
        until = parse_time(request.get("until")) if request.get("until") else None
        body = {k: request.get(k) for k in ("reason", "service", "environment", "until", "pause_canaries")}
        await self.authorise("freeze_start", who, request, body)
        if until is not None and until <= workflow.now():
            self.refuse("freeze_start", who, request, f"the freeze would end at {until.isoformat()}, which has passed; give a later --until")
        freeze = Freeze(
            id=f"freeze-{workflow.uuid4().hex[:8]}",
            by=who,
            reason=reason,
            service=request.get("service") or None,
            environment=request.get("environment") or None,
            started_at=workflow.now(),
            until=until,
            pause_canaries=bool(request.get("pause_canaries")),
        )
        self.freezes.append(freeze)
        self.record("freeze", "started", [reason], {"freeze": freeze.model_dump(mode="json"), "proof": request.get("proof")}, who)
        self.announce(f":snowflake: freeze {freeze.id} started by {who} ({self.scope(freeze)}): {reason}" + (f"; until {until.isoformat()}" if until else ""))
        return {"accepted": True, "freeze": freeze.model_dump(mode="json")}

    @workflow.update(name="end_freeze")
    async def end_freeze(self, request: dict[str, Any]) -> dict[str, Any]:
        who = str(request.get("identity", "")).lower()
        wanted = request.get("id")
        await self.authorise("freeze_end", who, request, {"id": wanted})
        ending = [f for f in self.active() if wanted in (None, f.id)]
        if not ending:
            raise ApplicationError(f"no freeze {wanted} is in force; see `signoff freeze status`" if wanted else "no freeze is in force; nothing to end")
        for f in ending:
            f.ended_at, f.ended_by = workflow.now(), who
            self.record("freeze", "ended", [f"ended by {who}"], {"freeze": f.model_dump(mode="json"), "proof": request.get("proof")}, who)
            self.announce(f":sunny: freeze {f.id} ({self.scope(f)}) ended by {who}")
        return {"accepted": True, "ended": [f.id for f in ending]}

    async def authorise(self, action: str, who: str, request: dict[str, Any], body: dict[str, Any]) -> None:
        """The proof must be the person's, for this action and these settings; then the policy decides."""
        raw = request.get("proof")
        proof = Proof.model_validate(raw) if isinstance(raw, dict) else None
        auth: AuthResult = await workflow.execute_local_activity(
            "authenticate_request",
            AuthRequest(proof=proof, expect={"action": action, "subject": SUBJECT, "body": body}),
            result_type=AuthResult,
            start_to_close_timeout=timedelta(seconds=30),
        )
        why: str | None = None
        if not auth.ok:
            why = auth.reason
        elif auth.nonce in self.used_nonces:
            why = "this proof was already used once; sign a new request (replay refused)"
        elif auth.kind != "person" or auth.identity.lower() != who:
            why = f"the proof speaks for {auth.principal}, not {who}; freezes are started and ended by people"
        if why is None:
            self.used_nonces.add(auth.nonce)
            groups = sorted(auth.snapshot.groups_of(who)) if auth.snapshot else []
            facts = {"action": action, "principal": who, "groups": groups, **{k: v for k, v in body.items() if v is not None}, "active": [f.id for f in self.active()]}
            try:
                decision = await workflow.execute_activity("evaluate_freeze_policy", facts, result_type=dict, start_to_close_timeout=timedelta(seconds=30))
            except ActivityError as e:
                raise ApplicationError(getattr(e.cause, "message", None) or str(e)) from None
            if not decision["allow"]:
                why = decision["reason"] or f"the policy does not let {who} {action.replace('_', ' ')}"
        if why is not None:
            self.refuse(action, who, request, why)

    def refuse(self, action: str, who: str, request: dict[str, Any], why: str) -> None:
        self.record("freeze", "refused", [why], {"action": action, "channel": request.get("channel")}, who or "unknown")
        raise ApplicationError(why)

    def record(self, kind: str, outcome: str, reasons: list[str], evidence: dict[str, Any], actor: str) -> None:
        self.decisions.append(kind, outcome, reasons, evidence, {"identity": actor})

    def announce(self, text: str) -> None:
        """Tell the channel, and wake every release waiting before promotion so it re-checks."""

        async def post() -> None:
            await workflow.execute_activity(
                "slack_notify",
                NotifyRequest(release_id=SUBJECT, kind="freeze", text=text),
                start_to_close_timeout=timedelta(seconds=30),
            )

        self.slack.put(post)
        self.changed = True
        self.publish()
        watchers, self.watchers = self.watchers, []
        for release_id in watchers:
            self.pending_signals += 1
            asyncio.create_task(self.wake(release_id))

    async def wake(self, release_id: str) -> None:
        try:
            await workflow.get_external_workflow_handle(release_id).signal("freezes_changed")
        except Exception as e:  # a release that already ended has nobody left to wake
            workflow.logger.info("release %s not signalled: %s", release_id, e)
        finally:
            self.pending_signals -= 1

    @staticmethod
    def scope(freeze: Freeze) -> str:
        return f"{freeze.service or 'every service'} in {freeze.environment or 'every environment'}"

