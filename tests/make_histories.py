#!/usr/bin/env python3
"""Regenerate tests/histories/*.json from real runs on a fresh Temporal dev server.

    python tests/make_histories.py                 # every scenario
    python tests/make_histories.py --only release-denied --out /tmp/histories

Why: tests/test_replay.py replays these histories against the current workflow code, so a
change that would break releases and runbook runs already in flight fails CI instead of
production. The runs are real (dev server, real activities, real builds, real Rego, the local
deploy target and a real Prometheus for the canary), so the histories contain exactly the
commands a real release produces. Regenerate them when a workflow change is *meant* to be
incompatible (and then version the workflow, see Temporal's patching API) or when new paths
through the plan appear; keep the old files that still replay.

Scenarios (file name = workflow id):
  release-succeeded            build → test → decide → promote (command target) → succeeded
  release-gated-approved       a gate: the requester is refused, alice (gateway-attested Slack
                               click) and bob (his own signature) approve → succeeded
  release-gated-batched        the same, with decision records queued together appended by one
                               `append_decisions` activity (patch `decision-batches`)
  release-start-refused        a start without a proof (a raw Temporal client) → denied at once
  release-denied               an agent touching .github/ without a co-requester → denied
  release-failed-build         the build command exits 3 → failed
  release-aborted-during-build an abort cancels a running build → aborted
  release-rolled-back          good release on the local target, then the bad flavour's canary
                               fails its Prometheus analysis → rolled back
                               (skipped, with a message, when /usr/bin/prometheus is missing)
  release-stopped-by-suspension an agent's release waits at its gate; on-call suspends the agent
                               → the release stops itself (aborted), gate closed
  agent-suspended              that suspension (AgentControlWorkflow): authenticated, decided by
                               policy, standing written, in-flight releases nudged
  release-build-timed-out      the build runs past its 2 s limit → failed, the runner's signed
                               snapshot of the workspace recorded
  drift-detected               a release on a command target, then what the target serves is
                               changed behind signoff's back → DriftWorkflow reports the drift
  reaper-run                   a gated release terminated from the outside → ReaperWorkflow
                               finds it and records it (nothing was serving)
  release-waiting-for-window   a freeze holds the release in waiting_for_window; ending it
                               releases it → succeeded
  freeze-keeper                a freeze keeper: a refused start, a freeze started and ended,
                               then it ends by itself when idle
  release-background-analysis  a canary watched by an open-ended background analysis (Prometheus
                               `vector(0)`, every second) that runs as an AnalysisWorkflow child and
                               continues-as-new (a second dev server suggests it after 40 events);
                               the canary closes it → succeeded (patch `analysis-child-workflows`)
  analysis-continued           that child's last run: started with the counters carried over,
                               stopped when the canary ended (needs Prometheus, like the above)
  runbook-refused              an unknown runbook → refused           (when RunbookWorkflow exists)
  runbook-restart              restart-service by on-call carol → its checks and steps run
                               (needs the local target and Prometheus, like release-rolled-back)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from temporalio.client import Client  # noqa: E402

DEFAULT_OUT = REPO / "tests" / "histories"
# Release commands run in the sandbox and see only their checkout: each scenario's directory
# holds a copy of the example service and its self-test.
PY = "python3"
BUILD_PY = "service/build.py"
SELFTEST_PY = "selftest.py"


def log(message: str) -> None:
    print(f"[make_histories] {message}", flush=True)


def isolate_environment(state: Path) -> None:
    """Like tests/conftest.py: no developer settings, no real Slack or Jira, state in a temp dir."""
    for key in list(os.environ):
        if key.startswith(("SIGNOFF_", "SLACK_", "JIRA_")):
            del os.environ[key]
    os.environ["SIGNOFF_STATE_DIR"] = str(state)
    from signoff.trust.dev import provision_dev

    provision_dev(state, directory_src=REPO / "examples" / "approvers.yaml", agents_src=REPO / "examples" / "agents.yaml")


async def save(client: Client, workflow_id: str, out: Path) -> Path:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    path = out / f"{workflow_id}.json"
    doc = json.loads(history.to_json())
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    log(f"saved {path.relative_to(REPO) if path.is_relative_to(REPO) else path} ({len(doc.get('events', []))} events)")
    return path


class Scenarios:
    """Each method runs one real workflow to its end on the worker and returns its id."""

    def __init__(self, sc: Any, work: Path, *, prometheus_url: str | None) -> None:
        self.sc = sc
        self.work = work
        self.prometheus_url = prometheus_url
        self.extra: dict[str, str] = {}

    def dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        if not (path / "service").exists():
            shutil.copytree(REPO / "examples" / "service", path / "service", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(REPO / "examples" / "selftest.py", path / "selftest.py")
        return path

    def command_target(self, name: str) -> dict[str, Any]:
        deploys = shlex.quote(str(self.dir(name) / "deploys.log"))
        return {
            "target": "command",
            "settings": {
                "deploy": f"echo deploy {{service}} {{digest}} {{weight}} >> {deploys}",
                "rollback": f"echo rollback {{service}} {{digest}} >> {deploys}",
            },
        }

    def spec(self, name: str, **overrides: Any) -> Any:
        from signoff.models import ReleaseFile

        doc: dict[str, Any] = {
            "service": "checkout",
            "requested_by": "dana@example.com",
            "environment": "production",
            "change": {"summary": f"history scenario {name}", "paths": ["docs/checkout.md"]},
            "build": {"command": f"{PY} {BUILD_PY} --flavour good --out dist/checkout.pyz", "output": "dist/checkout.pyz"},
            "deploy": self.command_target(name),
        }
        doc.update(overrides)
        return ReleaseFile.model_validate(doc)

    async def finish(self, rid: str, expected: str, timeout: float = 120) -> None:
        status = await self.sc.wait(rid, timeout=timeout)
        if status.phase.value != expected:
            raise RuntimeError(f"{rid} ended {status.phase.value} ({status.reason}); expected {expected}")
        log(f"{rid}: {status.phase.value} — {status.reason}")

    async def release_succeeded(self) -> str:
        rid = "release-succeeded"
        test = {
            "command": f"{PY} {SELFTEST_PY} --artifact dist/checkout.pyz --junit reports/junit.xml",
            "junit": "reports/junit.xml",
        }
        await self.sc.start_release(self.spec(rid, test=test), release_id=rid, base_dir=self.dir(rid))
        await self.finish(rid, "succeeded")
        return rid

    async def release_gated_approved(self) -> str:
        return await self._gated("release-gated-approved")

    async def release_gated_batched(self) -> str:
        """The gated run again, recorded with decision batches (its closing records share one
        `append_decisions` activity); release-gated-approved keeps the shape from before."""
        return await self._gated("release-gated-batched")

    async def _gated(self, rid: str) -> str:
        from signoff.models import ApprovalAttempt
        from tests.helpers import wait_phase

        gates = [{"name": "production", "required": 2, "from_groups": ["release-managers"], "channels": ["slack", "jira", "cli"]}]
        spec = self.spec(rid, gates=gates)
        await self.sc.start_release(spec, release_id=rid, base_dir=self.dir(rid))
        status = await wait_phase(self.sc, rid, "awaiting_approval", timeout=60)

        def attempt(who: str, channel: str) -> ApprovalAttempt:
            return ApprovalAttempt(release_id=rid, identity=who, channel=channel, digest=status.artifact_digest, plan=status.plan_sha256)  # type: ignore[arg-type]

        refused = await self.sc.submit_approval(attempt("dana@example.com", "cli"))
        assert not refused.accepted, refused
        from tests.helpers import attested

        for signed in (attested(attempt("alice@example.com", "slack")), attempt("bob@example.com", "api")):
            result = await self.sc.submit_approval(signed)
            assert result.accepted, result
        await self.finish(rid, "succeeded")
        return rid

    async def release_start_refused(self) -> str:
        """A start with no proof (a raw Temporal client): denied before anything runs."""
        from signoff.models import StartRelease

        rid = "release-start-refused"
        args = StartRelease(release_id=rid, spec=self.spec(rid), base_dir=str(self.dir(rid)))
        await self.sc.client.start_workflow("ReleaseWorkflow", args, id=rid, task_queue=self.sc.task_queue)
        await self.finish(rid, "denied")
        return rid

    async def release_denied(self) -> str:
        rid = "release-denied"
        spec = self.spec(
            rid,
            agent={"id": "release-bot", "model": "history-model"},
            change={"summary": "agent edits CI", "paths": [".github/workflows/release.yml"]},
        )
        await self.sc.start_release(spec, release_id=rid, base_dir=self.dir(rid))
        await self.finish(rid, "denied")
        return rid

    async def release_failed_build(self) -> str:
        rid = "release-failed-build"
        spec = self.spec(rid, build={"command": "echo 'cart.py:3: syntax error' >&2; exit 3", "output": "dist/none"})
        await self.sc.start_release(spec, release_id=rid, base_dir=self.dir(rid))
        await self.finish(rid, "failed")
        return rid

    async def release_aborted_during_build(self) -> str:
        from tests.helpers import wait_for

        rid = "release-aborted-during-build"
        spec = self.spec(rid, build={"command": "sleep 30.5", "output": "dist/none"})
        await self.sc.start_release(spec, release_id=rid, base_dir=self.dir(rid))
        await wait_for(self.sc, rid, lambda s: s.phase.value == "building", timeout=30)
        await asyncio.sleep(2)  # the build is running and heartbeating
        await self.sc.abort(rid, identity="dana@example.com", reason="wrong branch")
        await self.finish(rid, "aborted")
        return rid

    async def release_rolled_back(self) -> str | None:
        """The demo's story: the good build becomes stable, the bad build's canary is rolled back."""
        if not self.prometheus_url:
            log("skipping release-rolled-back: no Prometheus binary (install the Debian package `prometheus`)")
            return None
        examples = REPO / "examples"
        from signoff.releasefile import load_release_file

        good, _ = load_release_file(examples / "release-good.yaml")
        bad, _ = load_release_file(examples / "release-bad.yaml")
        # No agent and docs-only paths keep the policy's gates out of this story (the gated
        # scenario covers gates); the build, test, local target and canary are the examples'.
        human = {"agent": None, "change": {"summary": "canary story", "paths": ["docs/checkout.md"]}}
        base = self.dir("release-rolled-back")  # holds the example service and self-test
        stable_id = "release-rolled-back-stable"
        await self.sc.start_release(good.model_copy(update={**human, "canary": None}), release_id=stable_id, base_dir=base)
        await self.finish(stable_id, "succeeded", timeout=180)
        rid = "release-rolled-back"
        await self.sc.start_release(bad.model_copy(update=human), release_id=rid, base_dir=base)
        await self.finish(rid, "rolled_back", timeout=240)
        return rid

    async def release_stopped_by_suspension(self) -> list[str]:
        """Two histories: the release a suspension stops, and the suspension itself."""
        from tests.helpers import wait_for

        rid = "release-stopped-by-suspension"
        gate = {"name": "production", "required": 2, "from_groups": ["release-managers"], "channels": ["cli"]}
        spec = self.spec(rid, environment="staging", agent={"id": "release-bot", "model": "history-model"}, gates=[gate])
        await self.sc.start_release(spec, release_id=rid, base_dir=self.dir(rid))
        await wait_for(self.sc, rid, lambda s: s.phase.value == "awaiting_approval", timeout=120)
        result = await self.sc.control_agent("release-bot", "suspend", identity="carol@example.com", reason="history scenario")
        await self.finish(rid, "aborted")
        await self.sc.control_agent("release-bot", "resume", identity="carol@example.com", reason="history scenario over")
        return [rid, await self.renamed(result.control_id, "agent-suspended")]

    async def release_build_timed_out(self) -> str:
        rid = "release-build-timed-out"
        spec = self.spec(rid, build={"command": "echo warming up; sleep 30", "output": "dist/none", "timeout_seconds": 2})
        await self.sc.start_release(spec, release_id=rid, base_dir=self.dir(rid))
        await self.finish(rid, "failed")
        return rid

    async def drift_detected(self) -> str:
        from signoff.models import DriftCheck, DriftReport

        served = self.dir("drift-detected") / "serving.json"
        target = {"target": "command", "settings": {"deploy": f"echo '{{{{\"stable\": \"{{digest}}\"}}}}' > {shlex.quote(str(served))}", "current": f"cat {shlex.quote(str(served))}"}}
        served.write_text("{}")
        rid = "drift-release"
        spec = self.spec(rid, environment="staging", build=None, artifact="sha256:" + "d" * 64, deploy=target)
        await self.sc.start_release(spec, release_id=rid, base_dir=self.dir("drift-detected"))
        await self.finish(rid, "succeeded")
        await self.sc.wait(rid)
        served.write_text('{"stable": "sha256:%s"}' % ("e" * 64))
        report = await self.sc.client.execute_workflow("DriftWorkflow", DriftCheck(), id="drift-detected", task_queue="histories", result_type=DriftReport)
        if [f["status"] for f in report.findings] != ["detected"]:
            raise RuntimeError(f"drift-detected found {report.findings}; expected one detected drift")
        return "drift-detected"

    async def reaper_run(self) -> str:
        """A gated release terminated from the outside, then one run of the reaper finds it."""
        from tests.helpers import wait_phase

        rid = "reaper-terminated-release"
        gates = [{"name": "production", "required": 2, "from_groups": ["release-managers"], "channels": ["cli"]}]
        await self.sc.start_release(self.spec(rid, gates=gates), release_id=rid, base_dir=self.dir("reaper-run"))
        await wait_phase(self.sc, rid, "awaiting_approval", timeout=60)
        await self.sc.client.get_workflow_handle(rid).terminate(reason="operator pulled the plug")
        result = await self.sc.client.execute_workflow("ReaperWorkflow", 1.0, id="reaper-run", task_queue="histories", result_type=dict)
        if [r["outcome"] for r in result["reaped"]] != ["nothing_serving"]:
            raise RuntimeError(f"reaper-run reaped {result}; expected one release with nothing serving")
        return "reaper-run"

    async def renamed(self, workflow_id: str, name: str) -> str:
        """Save a workflow whose id is not chosen by the caller (one per signed request) under `name`."""
        history = await self.sc.client.get_workflow_handle(workflow_id).fetch_history()
        self.extra[name] = history.to_json()
        return name
    async def release_waiting_for_window(self) -> str:
        from tests.helpers import wait_phase

        rid = "release-waiting-for-window"
        await self.sc.freeze_start(identity="carol@example.com", reason="history scenario freeze", service="checkout")
        await self.sc.start_release(self.spec(rid), release_id=rid, base_dir=self.dir(rid))
        await wait_phase(self.sc, rid, "waiting_for_window", timeout=60)
        await self.sc.freeze_end(identity="alice@example.com")
        await self.finish(rid, "succeeded")
        return rid

    async def freeze_keeper(self) -> str:
        """A keeper that ends when idle for two seconds, so its history is a finished run."""
        rid = "freeze-keeper"
        handle = await self.sc.client.start_workflow("FreezeWorkflow", {"idle_seconds": 2}, id=rid, task_queue=self.sc.task_queue)

        async def update(name: str, who: str, action: str, body: dict[str, Any]) -> None:
            proof = self.sc.sign("person", who, action=action, subject="freezes", body=body)
            try:
                await handle.execute_update(name, {"identity": who, **body, "proof": proof.model_dump(mode="json")}, result_type=dict)
            except Exception as e:  # noqa: BLE001 - the refused start is part of the story
                log(f"{rid}: {name} by {who}: {e}")

        start = {"reason": "history freeze", "service": None, "environment": None, "until": None, "pause_canaries": False}
        await update("start_freeze", "dana@example.com", "freeze_start", start)
        await update("start_freeze", "carol@example.com", "freeze_start", start)
        await update("end_freeze", "alice@example.com", "freeze_end", {"id": None})
        await handle.result()
        return rid

    async def release_background_analysis(self) -> list[str] | None:
        """Its own dev server, which suggests continue-as-new after 40 events, so the analysis
        child spans several runs in a few seconds (the default is 4 Ki events)."""
        if not self.prometheus_url:
            log("skipping release-background-analysis: its analysis queries Prometheus, which is not installed")
            return None
        from signoff.config import Settings
        from tests.helpers import running_worker, start_dev_server, wait_for

        rid = "release-background-analysis"
        analysis = {"query": "vector(0)", "interval": "1s", "count": 0, "success": {"less_than": 0.05}}
        canary = {"steps": [{"set_weight": 20}, {"pause": {"duration": "10s"}}, {"set_weight": 50}], "analyses": {"availability": analysis}, "background": ["availability"]}
        spec = self.spec(rid, build=None, environment="staging", artifact="sha256:" + "b" * 64, canary=canary)
        env = await start_dev_server(extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"])
        try:
            async with running_worker(env.client, "histories-analysis", settings=Settings.from_env()) as sc:
                await sc.start_release(spec, release_id=rid, base_dir=self.dir(rid))
                status = await wait_for(sc, rid, lambda s: s.phase.is_final, timeout=120)
                await sc.handle(rid).result()
            if status.phase.value != "succeeded":
                raise RuntimeError(f"{rid} ended {status.phase.value} ({status.reason}); expected succeeded")
            history = await env.client.get_workflow_handle(rid).fetch_history()
            [child] = [e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id for e in history.events if e.HasField("child_workflow_execution_started_event_attributes")]
            last_run = await env.client.get_workflow_handle(child).fetch_history()
            outcome = await env.client.get_workflow_handle(child).result()
            if outcome["runs"] < 2:
                raise RuntimeError(f"{child} never continued as new ({outcome}); the history would not show it")
            log(f"{rid}: {status.phase.value}; its analysis ran {outcome['runs']} runs, {outcome['measured_total']} measurements")
            self.extra[rid] = history.to_json()
            self.extra["analysis-continued"] = last_run.to_json()
        finally:
            await env.shutdown()
        return [rid, "analysis-continued"]

    async def runbook_refused(self) -> str:
        rid = "runbook-refused"
        status = await self.sc.runbooks.run("no-such-runbook", params={}, identity="carol@example.com", run_id=rid, wait=True)
        if status.phase != "refused":
            raise RuntimeError(f"{rid} ended {status.phase} ({status.reason}); expected refused")
        log(f"{rid}: {status.phase} — {status.reason}")
        return rid

    async def runbook_restart(self) -> str | None:
        if not self.prometheus_url:
            log("skipping runbook-restart: it checks Prometheus, which is not installed")
            return None
        rid = "runbook-restart"
        status = await self.sc.runbooks.run("restart-service", params={"service": "checkout"}, identity="carol@example.com", run_id=rid, wait=True)
        log(f"{rid}: {status.phase} — {status.reason}")
        return rid


ORDER = [
    "release_succeeded",
    "release_gated_approved",
    "release_gated_batched",
    "release_start_refused",
    "release_denied",
    "release_failed_build",
    "release_aborted_during_build",
    "release_rolled_back",  # leaves the good build serving on the local target ...
    "release_background_analysis",
    "runbook_refused",
    "runbook_restart",  # ... which this restarts
    "release_stopped_by_suspension",
    "release_build_timed_out",
    "drift_detected",
    "reaper_run",
    "release_waiting_for_window",
    "freeze_keeper",
]


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON histories go")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names (e.g. release-denied)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary work directory")
    args = parser.parse_args(argv)
    wanted = [m for m in ORDER if args.only is None or m.replace("_", "-") in args.only]
    if not wanted:
        parser.error(f"no such scenario; choose from {', '.join(m.replace('_', '-') for m in ORDER)}")

    work = Path(tempfile.mkdtemp(prefix="signoff-histories-"))
    state = work / "state"
    isolate_environment(state)
    args.out.mkdir(parents=True, exist_ok=True)

    from signoff.config import Settings
    from tests.helpers import running_worker, start_dev_server
    from tests.prom import prometheus_available, start_prometheus
    from workers.registry import all_workflows

    has_runbooks = any(w.__name__ == "RunbookWorkflow" for w in all_workflows())
    if not has_runbooks:
        wanted = [m for m in wanted if not m.startswith("runbook")]
        log("RunbookWorkflow is not registered yet; runbook histories are not generated")

    prom = None
    env = await start_dev_server()
    failures: list[str] = []
    try:
        if prometheus_available() and any(m in wanted for m in ("release_rolled_back", "runbook_restart", "release_background_analysis")):
            prom = start_prometheus(work, file_sd_dir=state / "prometheus" / "targets")
            os.environ["SIGNOFF_PROMETHEUS_URL"] = prom.url
            log(f"Prometheus at {prom.url}")
        settings = Settings.from_env()
        async with running_worker(env.client, "histories", settings=settings) as sc:
            scenarios = Scenarios(sc, work, prometheus_url=prom.url if prom else None)
            for name in wanted:
                started = time.monotonic()
                run: Callable[[], Awaitable[str | list[str] | None]] = getattr(scenarios, name)
                try:
                    rid = await run()
                except Exception as e:  # noqa: BLE001 - report every scenario, then fail
                    failures.append(f"{name}: {e}")
                    log(f"FAILED {name}: {e}")
                    continue
                for one in [rid] if isinstance(rid, str) else rid or []:
                    if one in scenarios.extra:
                        doc = json.loads(scenarios.extra[one])
                        (args.out / f"{one}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
                        log(f"saved {one}.json ({len(doc.get('events', []))} events)")
                    else:
                        await save(env.client, one, args.out)
                log(f"{name} took {time.monotonic() - started:.1f}s")
    finally:
        from activities.deploy import stop_all

        stop_all(state)
        if prom is not None:
            prom.stop()
        await env.shutdown()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work directory kept at {work}")
    if failures:
        log("some scenarios failed: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
