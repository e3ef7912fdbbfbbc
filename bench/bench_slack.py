"""Slack click → approval recorded, against a bare Temporal Update round trip, same server, same run.

What is measured:

- *click*: a signed `block_actions` POST to the real gateway (uvicorn + bolt, signature
  verified) for a release waiting at its gate in the real ReleaseWorkflow, until the clicker's
  ephemeral answer reaches the Slack stub. That answer is sent right after the
  `submit_approval` Update returned, so this is "approval recorded in the workflow and the
  person told so" as Slack users experience it.
- *bare*: `execute_update` on a trivial workflow on the same dev server and worker process.
- *facade*: the same first approval through `SignoffClient.submit_approval` on a twin release
  (no Slack), which separates the gateway's share from the ReleaseWorkflow Update's own cost.

Clicks and bare Updates alternate so both see the same machine load. Prints median and p99 of
both and the median ratio (issue 4 target: ≤ 2); writes bench/results/slack.json.

    python bench/bench_slack.py [--n 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from temporalio import workflow  # noqa: E402


@workflow.defn(name="BenchBareUpdateWorkflow", sandboxed=False)
class BareUpdateWorkflow:
    """The floor: an Update that does nothing but answer."""

    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)

    @workflow.update
    async def ping(self, n: int) -> int:
        return n

    @workflow.signal
    def finish(self) -> None:
        self.done = True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q * (len(ordered) - 1)))))
    return ordered[k]


async def main(n: int) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="signoff-bench-slack-"))
    directory = state / "approvers.yaml"
    shutil.copy(REPO / "examples" / "approvers.yaml", directory)
    secret = "bench-signing-secret"
    from tests.stubs.slack_stub import APP_ID, TEAM_ID, SlackStub, signed_headers

    stub = SlackStub().start()
    os.environ.update(
        {
            "SIGNOFF_STATE_DIR": str(state / "state"),
            "SIGNOFF_DIRECTORY": str(directory),
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": secret,
            "SIGNOFF_SLACK_API_URL": stub.api_url,
            "SIGNOFF_SLACK_CHANNEL": "C0BENCH",
            "SIGNOFF_SLACK_TEAM_ID": TEAM_ID,
            "SIGNOFF_SLACK_APP_ID": APP_ID,
        }
    )
    from signoff.trust.dev import provision_dev

    trust = provision_dev(state / "state", directory_src=REPO / "examples" / "approvers.yaml", agents_src=REPO / "examples" / "agents.yaml")
    os.environ["SIGNOFF_DIRECTORY"] = str(trust.directory)  # the example people, with their dev keys
    import httpx
    from starlette.applications import Starlette
    from temporalio.worker import Worker

    from approvals.slack.app import build_slack_app, slack_routes
    from signoff.slack_config import SlackConfig
    from signoff.client import SignoffClient
    from signoff.config import Settings
    from signoff.models import ApprovalAttempt
    from signoff.slack_blocks import button_value
    from tests.helpers import gated_spec, running_worker, start_dev_server, wait_phase
    from tests.test_slack_app import click_body, serve

    env = await start_dev_server()
    settings = Settings.from_env()
    tq = f"bench-slack-{uuid.uuid4().hex[:8]}"
    clicks: list[float] = []
    direct: list[float] = []
    bare: list[float] = []
    try:
        async with running_worker(env.client, tq, settings=settings) as signoff, Worker(env.client, task_queue=tq + "-bare", workflows=[BareUpdateWorkflow]):
            async def factory() -> SignoffClient:
                return signoff

            app = build_slack_app(factory, settings=settings, directory_path=directory, config=SlackConfig.from_env())
            async with serve(Starlette(routes=slack_routes(app))) as base, httpx.AsyncClient(timeout=30) as http:
                from approvals.slack.app import slack_behaviour
                from signoff.slack_config import close_session

                web = slack_behaviour(app).web
                url = f"{base}/slack/events"
                releases = [f"rel-bench-{uuid.uuid4().hex[:10]}" for _ in range(n)]
                twins = [f"rel-bench-twin-{uuid.uuid4().hex[:10]}" for _ in range(n)]
                for rid in releases + twins:
                    await signoff.start_release(gated_spec(), release_id=rid)
                for rid in releases + twins:
                    await wait_phase(signoff, rid, "awaiting_approval", timeout=120)
                bare_handle = await env.client.start_workflow(BareUpdateWorkflow.run, id=f"bare-{tq}", task_queue=tq + "-bare")
                await bare_handle.execute_update(BareUpdateWorkflow.ping, 0)  # warm
                await asyncio.sleep(1.0)  # let the gates' opening notices drain
                for i, rid in enumerate(releases):
                    status = await signoff.status(rid)
                    before = len(stub.calls("chat.postEphemeral"))
                    value = button_value(rid, "production", status.artifact_digest, plan=status.plan_sha256)  # what the real button carries
                    body = click_body(rid, "U0ALICE", value=value, message_ts=status.gates[0].slack_ts or "1.1", channel="C0BENCH")
                    headers = signed_headers(secret, body)
                    t0 = time.monotonic()
                    resp = await http.post(url, content=body, headers=headers)
                    assert resp.status_code == 200, resp.text
                    answers = await stub.until("chat.postEphemeral", before + 1, timeout=30)
                    answer = answers[before]
                    assert "recorded" in answer.body["text"], answer.body["text"]
                    clicks.append(answer.at - t0)

                    t0 = time.monotonic()
                    await bare_handle.execute_update(BareUpdateWorkflow.ping, i)
                    bare.append(time.monotonic() - t0)

                    # the same first approval on a twin release, without Slack: the gateway's share
                    twin_plan = (await signoff.status(twins[i])).plan_sha256
                    t0 = time.monotonic()
                    result = await signoff.submit_approval(
                        ApprovalAttempt(
                            release_id=twins[i],
                            gate="production",
                            identity="alice@example.com",
                            channel="cli",
                            digest=status.artifact_digest,
                            plan=twin_plan,
                        )
                    )
                    direct.append(time.monotonic() - t0)
                    assert result.accepted, result.reason
                await bare_handle.signal(BareUpdateWorkflow.finish)
                await close_session(web)
                for rid in releases + twins:  # leave nothing running
                    try:
                        await env.client.get_workflow_handle(rid).terminate("bench finished")
                    except Exception:  # noqa: BLE001
                        pass
    finally:
        await env.shutdown()
        stub.stop()
        shutil.rmtree(state, ignore_errors=True)

    result = {
        "n": n,
        "click_ms": {"median": statistics.median(clicks) * 1000, "p99": percentile(clicks, 0.99) * 1000},
        "bare_update_ms": {"median": statistics.median(bare) * 1000, "p99": percentile(bare, 0.99) * 1000},
        "direct_submit_approval_ms": {"median": statistics.median(direct) * 1000, "p99": percentile(direct, 0.99) * 1000},
    }
    result["median_ratio"] = result["click_ms"]["median"] / result["bare_update_ms"]["median"]
    result["median_ratio_vs_facade"] = result["click_ms"]["median"] / result["direct_submit_approval_ms"]["median"]
    result["target_median_ratio"] = 2.0
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="clicks (and bare Updates) to time")
    args = parser.parse_args()
    out = asyncio.run(main(args.n))
    c, b = out["click_ms"], out["bare_update_ms"]
    print(f"slack click → approval recorded: median {c['median']:.1f} ms, p99 {c['p99']:.1f} ms (n={out['n']})")
    print(f"bare Temporal Update round trip: median {b['median']:.1f} ms, p99 {b['p99']:.1f} ms")
    d = out["direct_submit_approval_ms"]
    print(f"same approval via the client facade (no Slack): median {d['median']:.1f} ms, p99 {d['p99']:.1f} ms")
    print(f"median ratio click / bare Update {out['median_ratio']:.2f} (target ≤ {out['target_median_ratio']:.0f}); "
          f"click / facade Update on the same workflow {out['median_ratio_vs_facade']:.2f}")
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "slack.json").write_text(json.dumps(out, indent=2) + "\n")
