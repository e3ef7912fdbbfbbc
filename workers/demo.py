"""`signoff demo`: a good release that completes and a bad one the canary rolls back, narrated.

`signoff demo --flags` does the same behind a flagd feature flag (examples/release-flag-*.yaml) and
says how long after the failing verdict the flag was at 0 %.

It plays the people too: when a release waits at a gate, the demo approves as the examples'
approvers (alice, then carol from sre), after first showing that the requester (dana) cannot
approve her own release. Each step is printed as it happens.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from signoff.client import SignoffClient
from signoff.config import REPO_ROOT, Settings
from signoff.models import ApprovalAttempt, ReleaseStatus

EXAMPLES = REPO_ROOT / "examples"
APPROVERS = ["alice@example.com", "carol@example.com", "bob@example.com"]


def gate_line(gate: Any) -> str:
    """'  gate production: needs 2 approvals, none yet' — never an empty '()' before any progress."""
    needs = f"needs {gate.required} approval{'s' if gate.required != 1 else ''}"
    return f"  gate {gate.name}: {needs}" + (f" ({gate.progress})" if gate.progress else ", none yet")


async def drive_release(
    client: SignoffClient,
    file: str,
    release_id: str,
    *,
    echo: Callable[[str], None],
    approvers: list[str] = APPROVERS,
    timeout: float = 600,
) -> ReleaseStatus:
    """Start a release, approve it as the example approvers, and narrate until it ends."""
    status = await client.start_release(file, release_id=release_id)
    echo(f"▶ {release_id}: started {status.service} (requested by {status.requested_by})")
    seen_phase, seen_measurements, approved = None, 0, False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await client.status(release_id)
        if status.canary:
            for m in status.canary.analyses[seen_measurements:]:
                value = "n/a" if m.value is None else f"{m.value:.4f}"
                echo(f"  canary step {m.step}: {m.metric} = {value} → {m.verdict}")
            seen_measurements = len(status.canary.analyses)
        if status.phase != seen_phase:
            seen_phase = status.phase
            extra = f" tier={status.tier}" if status.phase.value == "awaiting_approval" else ""
            echo(f"  phase: {status.phase.value}{extra}" + (f" — {status.reason}" if status.reason else ""))
        if status.phase.value == "awaiting_approval" and not approved:
            approved = True
            for gate in status.gates:
                echo(gate_line(gate))
            result = await client.submit_approval(
                ApprovalAttempt(release_id=release_id, identity=status.requested_by, channel="cli", digest=status.artifact_digest)
            )
            echo(f"  {status.requested_by} tries to approve: {'accepted' if result.accepted else 'refused'} — {result.reason}")
            for person in approvers:
                result = await client.submit_approval(
                    ApprovalAttempt(release_id=release_id, identity=person, channel="cli", digest=status.artifact_digest, reason="demo review")
                )
                echo(f"  {person} approves: {'accepted' if result.accepted else 'refused'} — {result.reason}")
                if result.gate and result.gate.state != "open":
                    break
        if status.phase.is_final:
            return status
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{release_id} did not finish within {timeout:.0f}s")


async def run_demo(settings: Settings, *, echo: Callable[[str], None], flags: bool = False) -> dict[str, Any]:
    """The good and the bad release; with `flags`, the same two behind the feature flag."""
    client = await SignoffClient.connect(settings)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = "release-flag-" if flags else "release-"
    runs = [(f"{prefix}good.yaml", f"demo-good-{stamp}", "succeeded"), (f"{prefix}bad.yaml", f"demo-bad-{stamp}", "rolled_back")]
    out: list[dict[str, Any]] = []
    for file, rid, expected in runs:
        status = await drive_release(client, str(EXAMPLES / file), rid, echo=echo)
        ok = status.phase.value == expected
        echo(f"■ {rid}: {status.phase.value} ({'as expected' if ok else f'expected {expected}'})")
        out.append({"release_id": rid, "phase": status.phase.value, "expected": expected, "digest": status.artifact_digest})
        if flags and status.phase.value == "rolled_back":
            off = flag_off_after_verdict(settings, status)
            if off is not None:
                echo(f"  flag checkout-new-path at 0 % {off:.3f} s after the failing verdict")
                out[-1]["flag_off_after_verdict_s"] = round(off, 3)
    return {"ok": all(r["phase"] == r["expected"] for r in out), "releases": out}


def flag_off_after_verdict(settings: Settings, status: ReleaseStatus) -> float | None:
    """Seconds from the failing measurement to the flag target writing 0 % for this release."""
    from datetime import datetime

    from activities.deploy.flag import FlagTarget

    failed = [m.at for m in (status.canary.analyses if status.canary else []) if m.verdict == "failed" and m.at]
    zero = [e["at"] for e in FlagTarget(settings).actions(status.service).entries() if e["release_id"] == status.release_id and e["weight"] == 0]
    if not failed or len(zero) < 2:  # the first 0 % is the dark start, the last the rollback
        return None
    return datetime.fromisoformat(zero[-1].replace("Z", "+00:00")).timestamp() - failed[0].timestamp()
