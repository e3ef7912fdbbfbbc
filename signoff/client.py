"""The typed facade agents, the CLI and the approvals gateway use to talk to signoff.

It hides Temporal details (workflow ids, Update ids, id-reuse policies, search attribute
queries) behind verbs, and turns Temporal's errors into one-sentence `SignoffError`s.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from signoff.converter import data_converter
from temporalio.service import RPCError, RPCStatusCode

from signoff.config import Settings
from signoff.errors import NotFound, Refused, SignoffError, TemporalUnreachable
from signoff.models import (
    AgentControl,
    AgentControlResult,
    ApprovalAttempt,
    ApprovalResult,
    ReleaseFile,
    ReleaseStatus,
    RunbookStatus,
    StartRelease,
    StartRunbook,
)
from signoff.releasefile import default_release_id, load_release_file
from signoff.search_attributes import AGENT, DIGEST, KIND, MODEL, PHASE, REQUESTER, SERVICE
from signoff.trust.credentials import Credential, resolve_credential
from signoff.trust.evidence import start_body
from signoff.trust.proofs import new_request, request_of
from signoff.windows import freezes_id

RELEASE_WORKFLOW = "ReleaseWorkflow"
RUNBOOK_WORKFLOW = "RunbookWorkflow"
AGENT_CONTROL_WORKFLOW = "AgentControlWorkflow"
_FINAL_NAMES = {"succeeded", "rolled_back", "rejected", "denied", "failed", "aborted"}


def approval_update_id(attempt: ApprovalAttempt) -> str:
    """(release, gate, identity, decision, proof nonce): a retry of the same signed request is one
    Update, which Temporal deduplicates; a new decision is a new proof, so approving again after a
    revoke counts. Double clicks and the same person in Slack *and* Jira still count once: the
    gate counts people, not requests."""
    nonce = ""
    if attempt.proof is not None:
        try:
            nonce = str(request_of(attempt.proof).get("nonce", ""))
        except ValueError:
            nonce = ""
    key = f"{attempt.release_id}|{attempt.gate or '*'}|{attempt.identity.lower()}|{attempt.decision}|{nonce}"
    return "approval-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def temporal_connection_options(settings: Settings) -> dict[str, Any]:
    """mTLS (SIGNOFF_TEMPORAL_TLS_CERT / _KEY / _CA) and API keys (SIGNOFF_TEMPORAL_API_KEY) for
    every process that talks to Temporal: worker, gateway, CLI and client."""
    from signoff.errors import ConfigError

    options: dict[str, Any] = {}
    if settings.temporal_api_key:
        options["api_key"] = settings.temporal_api_key
    tls_files = (settings.temporal_tls_cert, settings.temporal_tls_key, settings.temporal_tls_ca)
    if any(tls_files):
        from temporalio.service import TLSConfig

        if bool(settings.temporal_tls_cert) != bool(settings.temporal_tls_key):
            raise ConfigError("mTLS needs both SIGNOFF_TEMPORAL_TLS_CERT and SIGNOFF_TEMPORAL_TLS_KEY; set both or neither.")

        def read(path: str | None, name: str) -> bytes | None:
            if not path:
                return None
            try:
                return Path(path).expanduser().read_bytes()
            except OSError as e:
                raise ConfigError(f"{name}={path} cannot be read ({e.strerror}); point it at the PEM file.") from e

        options["tls"] = TLSConfig(
            client_cert=read(settings.temporal_tls_cert, "SIGNOFF_TEMPORAL_TLS_CERT"),
            client_private_key=read(settings.temporal_tls_key, "SIGNOFF_TEMPORAL_TLS_KEY"),
            server_root_ca_cert=read(settings.temporal_tls_ca, "SIGNOFF_TEMPORAL_TLS_CA"),
            domain=settings.temporal_tls_server_name,
        )
    elif settings.temporal_api_key:
        options["tls"] = True  # API keys travel only over TLS
    return options


async def connect_temporal(settings: Settings, **extra: Any) -> Client:
    options = temporal_connection_options(settings)
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.temporal_address,
                namespace=settings.namespace,
                data_converter=data_converter,
                **options,
                **extra,
            ),
            timeout=10,
        )
    except (RuntimeError, OSError, asyncio.TimeoutError) as e:
        raise TemporalUnreachable(
            f"cannot reach Temporal at {settings.temporal_address}; is `signoff dev` running?"
        ) from e


def _rpc_error(e: RPCError, settings: Settings, what: str) -> SignoffError:
    if e.status == RPCStatusCode.NOT_FOUND:
        return NotFound(f"no {what} was found; check the id with `signoff release list`.")
    if e.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return TemporalUnreachable(f"cannot reach Temporal at {settings.temporal_address}; is `signoff dev` running?")
    return SignoffError(f"Temporal refused the request ({e.message}); try again, and report it if it persists.")


class SignoffClient:
    """Verbs over releases. Construct with `await SignoffClient.connect()` or around a Client."""

    def __init__(
        self,
        client: Client,
        *,
        settings: Settings | None = None,
        task_queue: str | None = None,
        visibility: bool = True,
        credentials: Any = None,
        channel: str = "api",
    ) -> None:
        """`visibility=False` runs releases without search attributes (servers that cannot hold
        them, like the time-skipping test server); `release list` then finds nothing.

        `credentials(kind, id) -> Credential` picks who signs; by default `SIGNOFF_IDENTITY_KEY`,
        `SIGNOFF_OIDC_TOKEN`, or the dev stack's keys (signoff/trust/credentials.py). `channel` is
        what requests say they came through (`api` here, `cli` from the command line).
        """
        self.client = client
        self.visibility = visibility
        self.settings = settings or Settings.from_env()
        self.task_queue = task_queue or self.settings.task_queue
        self.credentials = credentials or (lambda kind, ident: resolve_credential(self.settings, kind, ident))
        self.channel = channel
        self.notices: list[str] = []

    def credential(self, kind: str, ident: str) -> Credential:
        cred: Credential = self.credentials(kind, ident)
        if cred.notice and cred.notice not in self.notices:
            self.notices.append(cred.notice)
        return cred

    def sign(self, kind: str, ident: str, **request: Any) -> Any:
        """A proof for one request, signed as `kind:ident` with this caller's credential."""
        cred = self.credential(kind, ident)
        request.setdefault("channel", self.channel)
        return cred.prove(new_request(principal=cred.principal, **request))

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> "SignoffClient":
        settings = settings or Settings.from_env()
        return cls(await connect_temporal(settings), settings=settings)

    # ------------------------------------------------------------------ releases

    async def start_release(
        self,
        source: str | Path | ReleaseFile,
        *,
        release_id: str | None = None,
        base_dir: str | Path | None = None,
        wait: bool = False,
        started_by: str | None = None,
    ) -> ReleaseStatus:
        """Start a release, or return the existing one with the same id (running or finished)."""
        if isinstance(source, ReleaseFile):
            spec, directory = source, Path(base_dir or ".").resolve()
        else:
            spec, directory = load_release_file(source)
        rid = release_id or default_release_id(spec)
        kind, ident = ("agent", spec.agent.id) if spec.agent else ("person", spec.requested_by)
        proof = self.sign(kind, ident, action="start_release", subject=rid, body=start_body(spec, str(directory)))
        args = StartRelease(
            release_id=rid,
            spec=spec,
            base_dir=str(directory),
            started_by=started_by,
            search_attributes=self.visibility,
            proof=proof,
        )
        handle = await self._start(rid, args, spec)
        status = await self._authenticated_status(rid, handle)
        if wait:
            return await self.wait(rid)
        return status

    async def _authenticated_status(self, rid: str, handle: WorkflowHandle[Any, Any], *, timeout: float = 15.0) -> ReleaseStatus:
        """The status once the workflow has checked the start's proof, so a refused start is an
        error here (one sentence), not a release that silently ended `denied`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        status = await self.status(rid, handle=handle)
        while status.started_by is None and not status.phase.is_final and loop.time() < deadline:
            await asyncio.sleep(0.05)
            status = await self.status(rid, handle=handle)
        if status.phase.value == "denied" and status.started_by is None and (status.reason or "").startswith("the start was refused"):
            raise Refused(f"release {rid} was not started: {(status.reason or '').removeprefix('the start was refused: ')}.")
        return status

    async def _start(self, rid: str, args: StartRelease, spec: ReleaseFile) -> WorkflowHandle[Any, Any]:
        from temporalio.exceptions import WorkflowAlreadyStartedError

        try:
            return await self.client.start_workflow(
                RELEASE_WORKFLOW,
                args,
                id=rid,
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                search_attributes=_initial_attributes(spec) if args.search_attributes else None,
            )
        except WorkflowAlreadyStartedError:
            return self.client.get_workflow_handle(rid)  # finished with this id: that release is the answer
        except RPCError as e:
            if "search attribute" in e.message.lower() and "not defined" in e.message.lower():
                raise SignoffError(
                    f"Temporal at {self.settings.temporal_address} lacks signoff's search attributes; "
                    "start it with `signoff dev` or register them (see the README's production section)."
                ) from e
            raise _rpc_error(e, self.settings, f"release {rid}") from e

    def handle(self, release_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(release_id)

    async def _finished_status(self, release_id: str) -> ReleaseStatus | None:
        """A finished release's status is its result in history, so no worker has to be running
        to answer (a query on a closed workflow waits for a worker to replay it)."""
        try:
            description = await self.handle(release_id).describe()
        except RPCError:
            return None  # unknown id or a transient error: the query path below explains it
        if description.status != WorkflowExecutionStatus.COMPLETED:
            return None
        finished = self.client.get_workflow_handle(release_id, run_id=description.run_id, result_type=ReleaseStatus)
        try:
            return await finished.result(follow_runs=False)
        except (RPCError, ValueError, TypeError):  # an unreadable result: fall back to the query
            return None

    async def status(self, release_id: str, *, handle: WorkflowHandle[Any, Any] | None = None) -> ReleaseStatus:
        finished = await self._finished_status(release_id)
        if finished is not None:
            return finished
        handle = handle or self.handle(release_id)
        for attempt in range(50):
            try:
                return await handle.query("status", result_type=ReleaseStatus)
            except WorkflowQueryFailedError as e:
                raise SignoffError(f"release {release_id} could not report its status ({e}); see the Temporal UI.") from e
            except RPCError as e:
                # A just-started workflow has no worker answer yet; give it a moment.
                if e.status == RPCStatusCode.NOT_FOUND and "result not found" in e.message and attempt < 49:
                    await asyncio.sleep(0.2)  # the time-skipping server before the first workflow task
                    continue
                if e.status == RPCStatusCode.NOT_FOUND:
                    raise NotFound(f"no release {release_id} exists; check the id with `signoff release list`.") from e
                if attempt < 49 and e.status in (RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.DEADLINE_EXCEEDED):
                    await asyncio.sleep(0.2)
                    continue
                raise _rpc_error(e, self.settings, f"release {release_id}") from e
        raise SignoffError(f"release {release_id} did not answer; is a worker running (`signoff worker`)?")

    async def wait(self, release_id: str, *, timeout: float | None = None) -> ReleaseStatus:
        handle = self.handle(release_id)
        try:
            await asyncio.wait_for(handle.result(), timeout=timeout)
        except asyncio.TimeoutError:
            pass
        except Exception:  # noqa: BLE001 - a failed workflow still has a status to show
            pass
        return await self.status(release_id, handle=handle)

    async def list_releases(
        self,
        *,
        phase: str | None = None,
        awaiting: str | None = None,
        running_only: bool | None = None,
        limit: int = 1000,
        per_release_timeout: float = 3.0,
    ) -> list[ReleaseStatus]:
        """One visibility query, then each status read concurrently with its own time bound.

        A release whose worker does not answer is shown from its search attributes instead of
        holding the whole answer hostage. Filtering on a phase or a person lists running
        releases only (a terminated workflow keeps its last phase attribute forever).
        """
        clauses = [f"{KIND.name} = 'release'"]
        if phase:
            clauses.append(f"{PHASE.name} = '{_quote(phase)}'")
        if awaiting:
            clauses.append(f"SignoffAwaiting = '{_quote(awaiting.lower())}'")
        if running_only if running_only is not None else bool(phase and phase not in _FINAL_NAMES) or bool(awaiting):
            clauses.append("ExecutionStatus = 'Running'")
        found: list[Any] = []
        try:
            async for wf in self.client.list_workflows(" AND ".join(clauses), limit=limit):
                found.append(wf)
        except RPCError as e:
            raise _rpc_error(e, self.settings, "release") from e
        gate = asyncio.Semaphore(32)

        async def one(wf: Any) -> ReleaseStatus:
            async with gate:
                try:
                    return await asyncio.wait_for(self.status(wf.id), timeout=per_release_timeout)
                except (asyncio.TimeoutError, SignoffError):
                    attrs = wf.typed_search_attributes
                    return ReleaseStatus(
                        release_id=wf.id,
                        service=attrs.get(SERVICE) or "?",
                        requested_by=attrs.get(REQUESTER) or "?",
                        phase=attrs.get(PHASE) or "building",  # type: ignore[arg-type]
                        reason="status unavailable: no worker answered in time",
                    )

        return list(await asyncio.gather(*(one(wf) for wf in found)))

    # ------------------------------------------------------------------ people

    async def submit_approval(self, attempt: ApprovalAttempt) -> ApprovalResult:
        """Sign the attempt as its person (unless it carries a proof, such as the gateway's
        attestation) and hand it to the workflow; it verifies, decides and answers with progress."""
        if attempt.proof is None:
            attempt = await self.signed_attempt(attempt)
        handle = self.handle(attempt.release_id)
        try:
            return await handle.execute_update(
                "submit_approval",
                attempt,
                id=approval_update_id(attempt),
                result_type=ApprovalResult,
            )
        except WorkflowUpdateFailedError as e:
            cause = getattr(e.cause, "message", None) or str(e.cause or e)
            return ApprovalResult(accepted=False, reason=cause)
        except WorkflowUpdateRPCTimeoutOrCancelledError as e:
            raise TemporalUnreachable("the release did not answer in time; your approval may not be recorded, try again.") from e
        except RPCError as e:
            # The server answers NOT_FOUND "workflow execution already completed" for a finished
            # release: that release exists, so say it ended rather than that it is unknown.
            if any(word in e.message.lower() for word in ("completed", "already finished", "closing workflow")):
                raise Refused(f"release {attempt.release_id} has already finished; nothing left to approve.") from e
            if e.status == RPCStatusCode.FAILED_PRECONDITION:
                raise TemporalUnreachable(
                    f"release {attempt.release_id} could not take the decision right now ({e.message}); nothing was recorded, try again."
                ) from e
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"no running release {attempt.release_id}; check the id with `signoff release list`.") from e
            raise _rpc_error(e, self.settings, f"release {attempt.release_id}") from e

    async def signed_attempt(self, attempt: ApprovalAttempt) -> ApprovalAttempt:
        """The attempt with the person's proof. Keep it to retry: the same signed attempt is the
        same Update (Temporal answers a retry from the first answer); a new one is a new request."""
        if attempt.decision == "approve" and (attempt.digest is None or attempt.plan is None):
            # An approval binds the digest and the plan the person approves: the ones given, else
            # the ones the release shows now (a runbook run has neither).
            digest, plan = await self._current_binding(attempt.release_id)
            attempt = attempt.model_copy(update={"digest": attempt.digest or digest, "plan": attempt.plan or plan})
        proof = self.sign(
            "person",
            attempt.identity,
            action=attempt.decision,
            subject=attempt.release_id,
            gate=attempt.gate,
            digest=attempt.digest,
            plan=attempt.plan,
            channel=attempt.channel,
            body={"reason": attempt.reason},
        )
        return attempt.model_copy(update={"proof": proof})

    async def _current_binding(self, workflow_id: str) -> tuple[str | None, str | None]:
        """The artifact digest and plan hash the release shows now."""
        try:
            raw = await self.handle(workflow_id).query("status")
        except (RPCError, WorkflowQueryFailedError):
            return None, None  # the Update itself will say what is wrong with this id
        if not isinstance(raw, dict):
            return None, None
        digest, plan = raw.get("artifact_digest"), raw.get("plan_sha256")
        return (digest if isinstance(digest, str) else None), (plan if isinstance(plan, str) else None)

    async def _control(self, release_id: str, update: str, payload: dict[str, Any]) -> dict[str, Any]:
        handle = self.handle(release_id)
        try:
            return await handle.execute_update(update, payload, result_type=dict)
        except WorkflowUpdateFailedError as e:
            raise Refused(getattr(e.cause, "message", None) or str(e)) from e
        except RPCError as e:
            if "completed" in e.message.lower():  # NOT_FOUND "workflow execution already completed"
                raise Refused(f"release {release_id} has already finished; nothing left to {update}.") from e
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"no running release {release_id}; check the id with `signoff release list`.") from e
            raise _rpc_error(e, self.settings, f"release {release_id}") from e

    @property
    def runbooks(self) -> "RunbookClient":
        return RunbookClient(self)

    async def promote(self, release_id: str, *, identity: str, channel: str | None = None) -> dict[str, Any]:
        channel = channel or self.channel
        proof = self.sign(_kind(identity), identity, action="promote", subject=release_id, channel=channel)
        return await self._control(release_id, "promote", {"identity": identity.lower(), "channel": channel, "proof": proof.model_dump(mode="json")})

    async def abort(self, release_id: str, *, identity: str, reason: str, channel: str | None = None, via_signal: bool = False) -> dict[str, Any]:
        """Ask the release to stop. The signed request goes as the `abort` Update; if Temporal
        refuses more Updates for this release (its limit), the same request goes as the
        `abort_request` signal, which the workflow checks the same way."""
        channel = channel or self.channel
        proof = self.sign(_kind(identity), identity, action="abort", subject=release_id, channel=channel, body={"reason": reason})
        payload = {"identity": identity.lower() if "@" in identity else identity, "channel": channel, "reason": reason, "proof": proof.model_dump(mode="json")}
        if not via_signal:
            try:
                return await self._control(release_id, "abort", payload)
            except SignoffError as e:
                if not isinstance(e.__cause__, RPCError) or e.__cause__.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                    raise
        try:
            await self.handle(release_id).signal("abort_request", payload)
        except RPCError as e:
            raise _rpc_error(e, self.settings, f"release {release_id}") from e
        return {"accepted": True, "reason": f"abort requested by {payload['identity']} (as a signal: the workflow checks it and records the outcome)"}


    # ------------------------------------------------------------------ agents

    async def control_agent(self, agent_id: str, action: str, *, identity: str, reason: str = "") -> AgentControlResult:
        """Suspend or resume an agent: a signed request the worker's policy decides (exit 1 when refused)."""
        from workflows.agent import control_id_for

        channel = self.channel
        proof = self.sign(_kind(identity), identity, action=f"{action}_agent", subject=agent_id, channel=channel, body={"reason": reason})
        nonce = str(request_of(proof).get("nonce"))
        args = AgentControl(
            control_id=control_id_for(nonce), agent_id=agent_id, action=action, identity=identity.lower(), reason=reason, channel=channel, proof=proof  # type: ignore[arg-type]
        )
        try:
            result: AgentControlResult = await self.client.execute_workflow(
                AGENT_CONTROL_WORKFLOW,
                args,
                id=args.control_id,
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                result_type=AgentControlResult,
            )
        except RPCError as e:
            raise _rpc_error(e, self.settings, f"agent request {args.control_id}") from e
        if not result.accepted:
            raise Refused(f"{action} of agent {agent_id} was refused: {result.reason}.")
        return result

    async def running_releases_of(self, agent_id: str) -> list[str]:
        query = f"{KIND.name} = 'release' AND {AGENT.name} = '{_quote(agent_id)}' AND ExecutionStatus = 'Running'"
        try:
            return [wf.id async for wf in self.client.list_workflows(query)]
        except RPCError as e:
            raise _rpc_error(e, self.settings, "release") from e

    async def override_window(self, release_id: str, *, identity: str, reason: str, channel: str | None = None) -> dict[str, Any]:
        """Promote a release waiting for its deploy window (or a freeze) now; the policy names who may."""
        channel = channel or self.channel
        proof = self.sign("person", identity, action="override_window", subject=release_id, channel=channel, body={"reason": reason})
        return await self._control(release_id, "override_window", {"identity": identity.lower(), "channel": channel, "reason": reason, "proof": proof.model_dump(mode="json")})

    async def resolve_hold(self, release_id: str, *, identity: str, decision: str, reason: str, channel: str | None = None) -> dict[str, Any]:
        """Decide a held canary: `rollback` or `forward` (an approver, signed)."""
        channel = channel or self.channel
        proof = self.sign("person", identity, action="resolve_hold", subject=release_id, channel=channel, body={"decision": decision, "reason": reason})
        return await self._control(
            release_id, "resolve_hold", {"identity": identity.lower(), "channel": channel, "decision": decision, "reason": reason, "proof": proof.model_dump(mode="json")}
        )

    # ------------------------------------------------------------------ freezes

    async def freeze_start(
        self,
        *,
        identity: str,
        reason: str,
        service: str | None = None,
        environment: str | None = None,
        until: str | None = None,
        pause_canaries: bool = False,
    ) -> dict[str, Any]:
        """Start a change freeze (signed; the policy decides who may). `until`: ISO time or a span (2h)."""
        from datetime import datetime, timezone

        from signoff.windows import until_time

        end = until_time(until, datetime.now(timezone.utc))
        body = {"reason": reason, "service": service, "environment": environment, "until": end.isoformat() if end else None, "pause_canaries": pause_canaries}
        return await self._freeze_update("start_freeze", "freeze_start", identity, body)

    async def freeze_end(self, *, identity: str, freeze_id: str | None = None) -> dict[str, Any]:
        """End the freeze `freeze_id`, or every freeze in force."""
        return await self._freeze_update("end_freeze", "freeze_end", identity, {"id": freeze_id})

    async def freeze_status(self) -> list[dict[str, Any]]:
        """The freezes in force (none when nobody ever started one)."""
        try:
            return list(await self.handle(freezes_id(self.task_queue)).query("freezes"))
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return []
            raise _rpc_error(e, self.settings, "the freeze keeper") from e

    async def _freeze_update(self, update: str, action: str, identity: str, body: dict[str, Any]) -> dict[str, Any]:
        proof = self.sign("person", identity, action=action, subject="freezes", channel=self.channel, body=body)
        try:
            handle = await self.client.start_workflow(
                "FreezeWorkflow", None, id=freezes_id(self.task_queue), task_queue=self.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING
            )
            return await handle.execute_update(
                update, {"identity": identity.lower(), "channel": self.channel, **body, "proof": proof.model_dump(mode="json")}, result_type=dict
            )
        except WorkflowUpdateFailedError as e:
            raise Refused(getattr(e.cause, "message", None) or str(e)) from e
        except RPCError as e:
            raise _rpc_error(e, self.settings, "the freeze keeper") from e


class RunbookClient:
    """Verbs over runbook runs (on-call engineers, chat, agents, the canary's remediation)."""

    def __init__(self, facade: SignoffClient) -> None:
        self.facade = facade

    async def run(
        self,
        name: str,
        *,
        params: dict[str, Any],
        identity: str,
        channel: str = "cli",
        dry_run: bool = False,
        run_id: str | None = None,
        reply_to: dict[str, str] | None = None,
        wait: bool = False,
        proof: Any = None,
    ) -> RunbookStatus:
        import uuid

        from temporalio.common import SearchAttributePair, TypedSearchAttributes

        rid = run_id or f"run-{name}-{uuid.uuid4().hex[:10]}"
        who = identity.lower() if "@" in identity else identity
        args = StartRunbook(
            run_id=rid,
            runbook=name,
            params=params,
            requested_by=who,
            channel=channel,  # type: ignore[arg-type]
            dry_run=dry_run,
            reply_to=reply_to or {},
            search_attributes=self.facade.visibility,
        )
        if proof is None:
            from signoff.trust.evidence import run_expectations

            proof = self.facade.sign(_kind(who), who, action="runbook_run", subject=rid, channel=channel, body=run_expectations(args)["body"])
        args = args.model_copy(update={"proof": proof})
        attrs = TypedSearchAttributes([SearchAttributePair(KIND, "runbook"), SearchAttributePair(PHASE, "starting")])
        try:
            handle = await self.facade.client.start_workflow(
                RUNBOOK_WORKFLOW,
                args,
                id=rid,
                task_queue=self.facade.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=attrs if self.facade.visibility else None,
            )
        except RPCError as e:
            raise _rpc_error(e, self.facade.settings, f"runbook run {rid}") from e
        except Exception as e:  # noqa: BLE001
            from temporalio.exceptions import WorkflowAlreadyStartedError

            if not isinstance(e, WorkflowAlreadyStartedError):
                raise
            handle = self.facade.client.get_workflow_handle(rid)
        if wait:
            try:
                await handle.result()
            except Exception:  # noqa: BLE001 - the status says what happened
                pass
            return await self.status(rid)
        # Refusals (uncertified, not authorised, bad parameters) are decided before anything
        # runs; wait that long so the caller learns of them synchronously.
        status = await self.status(rid)
        for _ in range(150):
            if status.phase != "starting":
                break
            await asyncio.sleep(0.2)
            status = await self.status(rid)
        return status

    async def status(self, run_id: str) -> RunbookStatus:
        handle = self.facade.client.get_workflow_handle(run_id)
        for attempt in range(50):
            try:
                return await handle.query("status", result_type=RunbookStatus)
            except RPCError as e:
                if e.status == RPCStatusCode.NOT_FOUND and attempt == 49:
                    raise NotFound(f"no runbook run {run_id}; check the id.") from e
                if e.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.DEADLINE_EXCEEDED):
                    await asyncio.sleep(0.2)
                    continue
                raise _rpc_error(e, self.facade.settings, f"runbook run {run_id}") from e
        raise SignoffError(f"runbook run {run_id} did not answer; is a worker running (`signoff worker`)?")


def _kind(identity: str) -> str:
    """People are named by email; anything else is an agent id."""
    return "person" if "@" in identity else "agent"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _initial_attributes(spec: ReleaseFile) -> Any:
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    pairs: list[Any] = [
        SearchAttributePair(KIND, "release"),
        SearchAttributePair(PHASE, "building"),
        SearchAttributePair(SERVICE, spec.service),
        SearchAttributePair(REQUESTER, spec.requested_by),
    ]
    if spec.agent is not None:
        pairs.append(SearchAttributePair(AGENT, spec.agent.id))
        if spec.agent.model:
            pairs.append(SearchAttributePair(MODEL, spec.agent.model))
    if spec.build is None and spec.artifact:
        pairs.append(SearchAttributePair(DIGEST, spec.artifact))
    return TypedSearchAttributes(pairs)
