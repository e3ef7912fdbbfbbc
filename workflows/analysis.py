"""AnalysisWorkflow: one long canary analysis, measured in its own history, continued-as-new.

    (initial delay) → measure (`run_analysis`) → AnalysisState.record → wait next_delay → …
        → completed (the rules decided) or stopped (the canary ended): return the counters

A background or open-ended analysis at `interval: 1s` adds about ten events per measurement;
inside the release it filled Temporal's 50K-event history limit in hours, and Temporal terminated
the release mid-canary. Here the loop runs in a child of the release (`CanaryRunner`), which
continues-as-new every `continue_every` measurements or when Temporal suggests it, carrying the
AnalysisState counters, so a failure limit reached across a run boundary acts exactly as within
one run. The release hears of measurements in batched `analysis_measured` signals (the newest at
most every `report_every`, a verdict change sooner) and of the verdict in the child's result.

Only a release starts one: without a parent the run is refused, and reports go to the parent
Temporal records, never to an id from the input.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from signoff.models import NOTICE_LIST_LIMIT, AnalysisOutcome, AnalysisReport, Measurement, StartAnalysis

from workflows.canary import ANALYSIS_MEASURED, AnalysisState, measure_once

#: A verdict change is reported at once, but never more often than this (a flapping metric must
#: not turn every measurement into an event in the release's history).
VERDICT_REPORT_GAP = timedelta(seconds=10)

#: Measurements one report carries (the newest); the others are counted as skipped.
REPORT_LIMIT = NOTICE_LIST_LIMIT // 2


@workflow.defn(name="AnalysisWorkflow")
class AnalysisWorkflow:
    @workflow.init
    def __init__(self, args: StartAnalysis) -> None:
        spec = args.request.spec
        self.args = args
        self.state = AnalysisState.carried(args.state) if args.state is not None else AnalysisState.for_spec(spec)
        self.last: Measurement | None = args.last
        self.measured_total = args.measured_total
        self.reported_verdict = args.reported_verdict
        self.unreported: list[Measurement] = []
        self.skipped = 0
        self.last_report_at = None
        self.stopping = False

    @workflow.run
    async def run(self, args: StartAnalysis) -> AnalysisOutcome:
        parent = workflow.info().parent
        if parent is None:
            raise ApplicationError("an analysis runs only as the child of a release's canary", type="Refused", non_retryable=True)
        self.last_report_at = workflow.now()
        spec = args.request.spec
        delay = args.delay if args.state is not None else spec.initial_delay
        measured_here = 0
        while not self.state.phase.completed:
            if delay > timedelta(0):
                try:
                    await workflow.wait_condition(lambda: self.stopping, timeout=delay)
                except asyncio.TimeoutError:
                    pass
            if self.stopping:
                break
            measurement = await self.measure(args)
            if measurement is None:  # stopped mid-measurement
                break
            self.state.record(measurement.verdict)
            measured_here += 1
            await self.report(final=self.state.phase.completed)
            delay = self.state.next_delay(spec.interval)
            if not self.state.phase.completed and (measured_here >= args.continue_every or workflow.info().is_continue_as_new_suggested()):
                await self.report(final=True)
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self.stopping:
                    workflow.continue_as_new(
                        args.model_copy(
                            update={
                                "state": self.state.carry(),
                                "delay": delay,
                                "measured_total": self.measured_total,
                                "runs": args.runs + 1,
                                "last": self.last,
                                "reported_verdict": self.reported_verdict,
                            }
                        )
                    )
        stopped = not self.state.phase.completed
        if stopped:
            self.state.terminate()  # Argo's terminating rules (fail safe: see AnalysisState)
        await self.report(final=True)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return AnalysisOutcome(
            name=args.request.name,
            phase=self.state.phase.value,
            state=self.state.carry(),
            last=self.last,
            measured_total=self.measured_total,
            runs=args.runs,
            stopped=stopped,
        )

    async def measure(self, args: StartAnalysis) -> Measurement | None:
        """One measurement; a stop while it runs cancels it (it is not counted)."""
        task = asyncio.ensure_future(measure_once(args.request, timeout=args.measurement_timeout))
        await workflow.wait_condition(lambda: task.done() or self.stopping)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return None
        self.last = task.result()
        self.measured_total += 1
        self.unreported.append(self.last)
        if len(self.unreported) > REPORT_LIMIT:
            self.skipped += len(self.unreported) - REPORT_LIMIT
            del self.unreported[:-REPORT_LIMIT]
        return self.last

    async def report(self, *, final: bool) -> None:
        """Tell the parent the newest measurements: on completion, before continue-as-new, after
        `report_every`, or on a verdict change (at most every VERDICT_REPORT_GAP)."""
        if not self.unreported:
            return
        assert self.last is not None and self.last_report_at is not None
        since = workflow.now() - self.last_report_at
        first = self.reported_verdict is None  # the first measurement shows at once
        changed = first or (self.last.verdict != self.reported_verdict and since >= VERDICT_REPORT_GAP)
        if not (final or changed or since >= self.args.report_every):
            return
        batch, skipped = self.unreported, self.skipped
        self.unreported, self.skipped = [], 0
        self.reported_verdict, self.last_report_at = self.last.verdict, workflow.now()
        parent = workflow.info().parent
        assert parent is not None
        report = AnalysisReport(analysis_id=workflow.info().workflow_id, name=self.args.request.name, measurements=batch, skipped=skipped)
        try:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(ANALYSIS_MEASURED, report)
        except Exception as e:  # noqa: BLE001 - a parent that ended has nobody to tell; its close policy ends us
            workflow.logger.info("analysis report to %s not delivered: %s", parent.workflow_id, e)

    @workflow.signal(name="stop")
    def stop(self) -> None:
        """The canary ended: an open-ended analysis stops and returns what it saw."""
        self.stopping = True

    @workflow.query(name="state")
    def query_state(self) -> AnalysisOutcome:
        return AnalysisOutcome(
            name=self.args.request.name,
            phase=self.state.phase.value,
            state=self.state.carry(),
            last=self.last,
            measured_total=self.measured_total,
            runs=self.args.runs,
        )
