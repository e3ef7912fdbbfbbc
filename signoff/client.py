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
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from signoff.config import Settings
from signoff.errors import NotFound, Refused, SignoffError, TemporalUnreachable
from signoff.models import (
    ApprovalAttempt,
    ApprovalResult,
    ReleaseFile,
    ReleaseStatus,
    RunbookStatus,
    StartRelease,
    StartRunbook,
)
from signoff.releasefile import default_release_id, load_release_file
from signoff.search_attributes import KIND, PHASE, REQUESTER, SERVICE

RELEASE_WORKFLOW = "ReleaseWorkflow"
RUNBOOK_WORKFLOW = "RunbookWorkflow"
_DIRECTORY_VIEWS: dict[Path, Any] = {}
_FINAL_NAMES = {"succeeded", "rolled_back", "rejected", "denied", "failed", "aborted"}


def approval_update_id(attempt: ApprovalAttempt) -> str:
    """(release, gate, identity, decision): a double click, a retried webhook or the same person
    in Slack *and* Jira all map to one Update, which Temporal deduplicates."""
    key = f"{attempt.release_id}|{attempt.gate or '*'}|{attempt.identity.lower()}|{attempt.decision}"
    return "approval-" + hashlib.sha256(key.encode()).hexdigest()[:32]


async def connect_temporal(settings: Settings) -> Client:
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.temporal_address,
                namespace=settings.namespace,
                data_converter=pydantic_data_converter,
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
        self, client: Client, *, settings: Settings | None = None, task_queue: str | None = None, visibility: bool = True
    ) -> None:
        """`visibility=False` runs releases without search attributes (servers that cannot hold
        them, like the time-skipping test server); `release list` then finds nothing."""
        self.client = client
        self.visibility = visibility
        self.settings = settings or Settings.from_env()
        self.task_queue = task_queue or self.settings.task_queue

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
        args = StartRelease(
            release_id=rid,
            spec=spec,
            base_dir=str(directory),
            directory_path=str(self.settings.directory_path),
            policy_dir=str(self.settings.policy_dir),
            started_by=started_by,
            search_attributes=self.visibility,
        )
        handle = await self._start(rid, args, spec)
        if wait:
            return await self.wait(rid)
        return await self.status(rid, handle=handle)

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
        """Hand an authenticated attempt to the workflow; it decides and answers with progress."""
        if attempt.directory_sha256 is None:
            attempt = attempt.model_copy(update={"directory_sha256": self._directory_sha256()})
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
            if "completed" in e.message.lower() or "already finished" in e.message.lower():
                raise Refused(f"release {attempt.release_id} has already finished; nothing left to approve.") from e
            if e.status == RPCStatusCode.FAILED_PRECONDITION:
                raise TemporalUnreachable(
                    f"release {attempt.release_id} could not take the decision right now ({e.message}); nothing was recorded, try again."
                ) from e
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"no running release {attempt.release_id}; check the id with `signoff release list`.") from e
            raise _rpc_error(e, self.settings, f"release {attempt.release_id}") from e

    def _directory_sha256(self) -> str | None:
        """The directory's hash as this process sees it now (mtime-cached); None if unreadable."""
        from signoff.directory import ApproverDirectory
        from signoff.errors import ConfigError

        view = _DIRECTORY_VIEWS.get(self.settings.directory_path)
        if view is None:
            view = _DIRECTORY_VIEWS[self.settings.directory_path] = ApproverDirectory(self.settings.directory_path)
        try:
            return view.snapshot().sha256
        except ConfigError:
            return None

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

    async def promote(self, release_id: str, *, identity: str, channel: str = "cli") -> dict[str, Any]:
        return await self._control(release_id, "promote", {"identity": identity.lower(), "channel": channel})

    async def abort(self, release_id: str, *, identity: str, reason: str, channel: str = "cli") -> dict[str, Any]:
        return await self._control(release_id, "abort", {"identity": identity.lower(), "channel": channel, "reason": reason})


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
    ) -> RunbookStatus:
        import uuid

        from temporalio.common import SearchAttributePair, TypedSearchAttributes

        rid = run_id or f"run-{name}-{uuid.uuid4().hex[:10]}"
        args = StartRunbook(
            run_id=rid,
            runbook=name,
            params=params,
            requested_by=identity.lower(),
            channel=channel,  # type: ignore[arg-type]
            dry_run=dry_run,
            directory_path=str(self.facade.settings.directory_path),
            reply_to=reply_to or {},
            search_attributes=self.facade.visibility,
        )
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


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _initial_attributes(spec: ReleaseFile) -> Any:
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    return TypedSearchAttributes(
        [
            SearchAttributePair(KIND, "release"),
            SearchAttributePair(PHASE, "building"),
            SearchAttributePair(SERVICE, spec.service),
            SearchAttributePair(REQUESTER, spec.requested_by),
        ]
    )
