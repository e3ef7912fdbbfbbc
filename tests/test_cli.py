"""The `signoff` console script as agents and people run it: real process, real exit codes.

Every command here is the installed entry point run as a subprocess, so argument parsing,
error handling (one sentence, no traceback), `--json` (exactly one JSON document on stdout)
and exit codes 0/1/2 are tested exactly as the contract in DESIGN.md states them. Commands
that talk to Temporal use the real dev server, with a worker running in this test process
on a fresh task queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from signoff.policy import evaluate_release_file
from tests.conftest import FIXTURES
from tests.helpers import DIGEST_A, REPO, running_worker, wait_phase

pytestmark = pytest.mark.asyncio

SIGSTORE = FIXTURES / "sigstore"
WHEEL = SIGSTORE / "rfc8785-0.1.2-py3-none-any.whl"
WHEEL_BUNDLE = SIGSTORE / "rfc8785-0.1.2-py3-none-any.whl.sigstore"
WHEEL_IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"


def signoff_executable() -> str:
    """The console script pip installed next to this interpreter (not a pyenv shim)."""
    beside = Path(sys.executable).parent / "signoff"
    found = str(beside) if beside.exists() else shutil.which("signoff")
    if not found:
        raise RuntimeError("the signoff console script is not installed; run `bash scripts/install` and use .venv/bin/python")
    return found


SIGNOFF = signoff_executable()


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout must be exactly one JSON document."""
        return json.loads(self.stdout)

    def error_line(self) -> str:
        """The one-sentence error on stderr (library log lines such as sigstore's TUF notice aside)."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = [line for line in self.stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, self.stderr
        return lines[0].removeprefix("error: ")


async def signoff(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
    """Run the real console script without blocking the event loop (the worker lives in it)."""
    proc = await asyncio.create_subprocess_exec(
        SIGNOFF,
        *args,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"signoff {' '.join(args)} did not finish within {timeout}s")
    assert proc.returncode is not None
    # temporalio/sdk-python#300: the SDK's Rust threads can abort CPython's finalisation after
    # the answer was printed (exit -6); an agent would see a failure and retry. The CLI must
    # exit without finalising (see the report for signoff/cli.py).
    assert "Fatal Python error" not in err.decode(), f"signoff {' '.join(args)} crashed at exit ({proc.returncode}): {err.decode()[-500:]}"
    return Run(proc.returncode, out.decode(), err.decode())


def one_sentence(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    assert text.rstrip().endswith("."), text
    return text


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


VALID = {
    "service": "checkout",
    "requested_by": "dana@example.com",
    "change": {"summary": "docs tweak", "paths": ["docs/checkout.md"]},
    "artifact": DIGEST_A,
    "deploy": {"target": "command", "settings": {"deploy": "true"}},
}


def write(tmp_path: Path, name: str, doc: Any) -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


# --------------------------------------------------------------------------- bad input, no server needed


async def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    plain, as_json = await asyncio.gather(signoff("release", "start", str(path)), signoff("release", "start", str(path), "--json"))
    assert plain.code == 1 and plain.stdout == ""
    assert one_sentence(plain.error_line()) == f"release file {path} does not exist; check the path."
    assert as_json.code == 1 and as_json.json() == {"error": f"release file {path} does not exist; check the path.", "kind": "ReleaseFileError"}


async def test_directory_instead_of_file(tmp_path: Path) -> None:
    run = await signoff("release", "start", str(tmp_path), "--json")
    assert run.code == 1
    assert "is not a file" in one_sentence(run.json()["error"])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            "service: checkout\nrequested_by: dana@example.com\nchange: {summary: [unclosed\n",
            "is not valid YAML at line 4, column 1; fix the syntax and start again.",
            id="invalid-yaml-names-the-line",
        ),
        pytest.param(
            {**VALID, "colour": "blue"},
            "unknown field 'colour'; remove it or check its spelling",
            id="unknown-field",
        ),
        pytest.param(
            {**VALID, "build": {"command": "make", "output": "x", "timeout_seconds": "soon"}, "artifact": None},
            "field 'build.timeout_seconds' input should be a valid integer",
            id="wrong-type",
        ),
        pytest.param(
            {k: v for k, v in VALID.items() if k != "requested_by"},
            "required field 'requested_by' is missing",
            id="missing-required-field",
        ),
        pytest.param(
            {**VALID, "artifact": "sha256:abc123"},
            "field 'artifact' must be a digest of the form sha256:<64 lowercase hex characters>",
            id="wrong-digest-format",
        ),
        pytest.param(
            "- just\n- a list\n",
            "this one is not a mapping.",
            id="not-a-mapping",
        ),
    ],
)
async def test_bad_release_file_is_refused_in_one_sentence_naming_file_and_field(tmp_path: Path, content: Any, expected: str) -> None:
    if isinstance(content, dict):
        content = {k: v for k, v in content.items() if v is not None}
    path = write(tmp_path, "release.yaml", content)
    # A closed Temporal port proves the file is refused before anything is started.
    env = {"SIGNOFF_TEMPORAL_ADDRESS": f"127.0.0.1:{closed_port()}"}
    plain, as_json = await asyncio.gather(
        signoff("release", "start", str(path), env=env), signoff("release", "start", str(path), "--json", env=env)
    )
    assert plain.code == 1 and plain.stdout == ""
    message = one_sentence(plain.error_line())
    assert str(path) in message and expected in message, message
    assert as_json.code == 1
    assert as_json.json() == {"error": message, "kind": "ReleaseFileError"}


async def test_temporal_not_running(tmp_path: Path) -> None:
    path = write(tmp_path, "release.yaml", VALID)
    address = f"127.0.0.1:{closed_port()}"
    env = {"SIGNOFF_TEMPORAL_ADDRESS": address}
    expected = f"cannot reach Temporal at {address}; is `signoff dev` running?"
    start, status, as_json = await asyncio.gather(
        signoff("release", "start", str(path), env=env),
        signoff("release", "status", "rel-x", env=env),
        signoff("release", "list", "--json", env=env),
    )
    for run in (start, status):
        assert run.code == 1 and run.stdout == ""
        assert run.error_line() == expected
    assert as_json.code == 1 and as_json.json() == {"error": expected, "kind": "TemporalUnreachable"}


async def test_usage_errors_exit_2() -> None:
    no_file, unknown_cmd, no_identity, bogus_phase, bogus_phase_json = await asyncio.gather(
        signoff("release", "start"),
        signoff("release", "frobnicate"),
        signoff("approve", "rel-x"),
        signoff("release", "list", "--phase", "bogus"),
        signoff("release", "list", "--phase", "bogus", "--json"),
    )
    assert no_file.code == 2 and "Missing argument 'FILE'" in no_file.stderr
    assert unknown_cmd.code == 2 and "No such command 'frobnicate'" in unknown_cmd.stderr
    assert no_identity.code == 2 and "Missing option '--as'" in no_identity.stderr
    for run in (no_file, unknown_cmd, no_identity):
        assert run.stdout == "" and "Traceback" not in run.stderr
    assert bogus_phase.code == 2
    message = one_sentence(bogus_phase.error_line())
    assert message.startswith("unknown phase 'bogus'; use one of: building, testing") and "awaiting_approval" in message
    assert bogus_phase_json.code == 2 and bogus_phase_json.json() == {"error": message, "kind": "UsageError"}


# --------------------------------------------------------------------------- policy and provenance


async def test_policy_eval_and_policy_test() -> None:
    good = REPO / "examples" / "release-good.yaml"
    evaluated, tested = await asyncio.gather(signoff("policy", "eval", str(good), "--json"), signoff("policy", "test", "--json"))
    assert evaluated.code == 0, evaluated.stderr
    doc = evaluated.json()
    in_process = evaluate_release_file(good, policy_dir=REPO / "policies")
    assert doc["policy_sha256"] == in_process.policy_sha256 and len(doc["policy_sha256"]) == 64
    assert doc["tier"] == "high" and doc["denials"] == []  # an agent's production change
    assert doc["reasons"] == ["production change authored by agent release-bot"]
    [gate] = doc["gates"]
    assert (gate["name"], gate["required"], gate["quotas"]) == ("production", 2, {"sre": 1})
    assert tested.code == 0, tested.stderr
    results = tested.json()
    assert results["failed"] == 0 and results["failures"] == [] and results["passed"] >= 10


async def test_policy_eval_denial_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "ci.yaml", {**VALID, "agent": {"id": "release-bot"}, "change": {"summary": "ci", "paths": [".github/workflows/x.yml"]}})
    run = await signoff("policy", "eval", str(path), "--json")
    assert run.code == 1
    denials = run.json()["denials"]
    assert "agent release-bot changes CI configuration (.github/workflows/x.yml) without a human co-requester" in denials
    # a digest signoff did not build, with no Sigstore bundle, is not shipped to production either
    assert any("has no verified provenance and production requires it" in d for d in denials) and len(denials) == 2


async def test_verify_real_sigstore_bundle() -> None:
    ok, wrong = await asyncio.gather(
        signoff("verify", str(WHEEL), "--bundle", str(WHEEL_BUNDLE), "--identity", WHEEL_IDENTITY, "--issuer", GITHUB_ACTIONS_ISSUER, "--offline", "--json"),
        signoff("verify", str(WHEEL), "--bundle", str(WHEEL_BUNDLE), "--identity", "https://github.com/evil/repo", "--issuer", GITHUB_ACTIONS_ISSUER, "--offline"),
    )
    assert ok.code == 0, ok.stderr
    doc = ok.json()
    assert doc["verified"] is True and doc["identity"] == WHEEL_IDENTITY and doc["issuer"] == GITHUB_ACTIONS_ISSUER
    assert doc["artifact_digest"] == "sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"
    assert wrong.code == 1 and wrong.stdout == ""
    message = one_sentence(wrong.error_line())
    assert "failed verification" in message and "https://github.com/evil/repo" in message


# --------------------------------------------------------------------------- against the dev server


async def test_release_lifecycle_through_the_cli(dev_env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path) -> None:
    env = {
        "SIGNOFF_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "SIGNOFF_TASK_QUEUE": task_queue,
    }
    deploys = tmp_path / "deploys.log"
    release_file = write(
        tmp_path,
        "release.yaml",
        {
            **VALID,
            "environment": "staging",  # a digest signoff did not build needs Sigstore provenance in production
            "deploy": {"target": "command", "settings": {"deploy": f"echo {{digest}} >> '{deploys}'"}},
            "gates": [{"name": "production", "required": 2, "from_groups": ["release-managers"], "channels": ["slack", "cli"]}],
        },
    )
    r = f"rel-cli-{uuid.uuid4().hex[:10]}"
    async with running_worker(client, task_queue) as sc:
        started = await signoff("release", "start", str(release_file), "--id", r, "--json", env=env)
        assert started.code == 0, started.stderr
        doc = started.json()
        assert doc["release_id"] == r and doc["artifact_digest"] == DIGEST_A and doc["requested_by"] == "dana@example.com"
        assert doc["phase"] in ("building", "deciding", "awaiting_approval")

        again = await signoff("release", "start", str(release_file), "--id", r, "--json", env=env)
        assert again.code == 0 and again.json()["run_id"] == doc["run_id"]  # a retried start is the same release

        await wait_phase(sc, r, "awaiting_approval", timeout=30)
        status = await signoff("release", "status", r, "--json", env=env)
        assert status.code == 0
        assert status.json()["phase"] == "awaiting_approval" and status.json()["gates"][0]["state"] == "open"
        text = await signoff("release", "status", r, env=env)
        assert text.code == 0 and r in text.stdout and "awaiting_approval" in text.stdout

        listed: list[str] = []
        for _ in range(50):  # visibility is eventually consistent
            run = await signoff("release", "list", "--phase", "awaiting_approval", "--json", env=env)
            assert run.code == 0
            listed = [s["release_id"] for s in run.json()["releases"]]
            if r in listed:
                break
            await asyncio.sleep(0.2)
        assert r in listed
        assert all(s["phase"] == "awaiting_approval" for s in run.json()["releases"])

        requester = await signoff("approve", r, "--as", "dana@example.com", "--json", env=env)
        assert requester.code == 1
        refused = requester.json()
        assert refused["accepted"] is False and "requester" in refused["reason"]
        requester_text = await signoff("approve", r, "--as", "dana@example.com", env=env)
        assert requester_text.code == 1 and requester_text.stdout.startswith("refused: ")

        alice = await signoff("approve", r, "--as", "alice@example.com", "--json", env=env)
        assert alice.code == 0, f"exit {alice.code}; stderr: {alice.stderr}"
        accepted = alice.json()
        assert accepted["accepted"] is True
        assert accepted["gate"]["progress"].startswith("1 of 2: alice@example.com")
        assert [a["by"] for a in accepted["gate"]["approvals"]] == ["alice@example.com"]
        assert accepted["gate"]["approvals"][0]["channel"] == "cli"
        assert accepted["gate"]["approvals"][0]["method"].startswith("key:")
        # On the dev stack the CLI signs with the person's dev key and says so, on stderr only.
        assert "signing as person:alice@example.com with the dev stack's key" in alice.stderr

        no_reason = await signoff("reject", r, "--as", "bob@example.com", env=env)
        assert no_reason.code == 2 and "Missing option '--reason'" in no_reason.stderr

        bad_identity = await signoff("approve", r, "--as", "bob", "--json", env=env)
        assert bad_identity.code == 2 and "--as needs an email address" in bad_identity.json()["error"]

        revoked = await signoff("approve", r, "--as", "alice@example.com", "--revoke", "--json", env=env)
        assert revoked.code == 0
        assert revoked.json()["accepted"] is True and revoked.json()["gate"]["approvals"] == []

        aborted = await signoff("release", "abort", r, "--as", "dana@example.com", "--reason", "superseded", "--json", env=env)
        assert aborted.code == 0 and aborted.json() == {"accepted": True, "reason": "abort requested by dana@example.com: superseded"}
        final = await sc.wait(r, timeout=30)
        assert final.phase.value == "aborted" and final.reason == "aborted by dana@example.com: superseded"
        # each CLI call is its own signed request (its own nonce), so dana's two attempts are two refusals
        assert [x.by for x in final.gates[0].refusals] == ["dana@example.com", "dana@example.com"]

        late = await signoff("approve", r, "--as", "bob@example.com", "--json", env=env)
        assert late.code == 1
        assert late.json() == {"error": f"release {r} has already finished; nothing left to approve.", "kind": "Refused"}
        late_abort = await signoff("release", "abort", r, "--as", "dana@example.com", "--reason", "again", "--json", env=env)
        assert late_abort.code == 1
        assert late_abort.json() == {"error": f"release {r} has already finished; nothing left to abort.", "kind": "Refused"}
        after = await signoff("release", "start", str(release_file), "--id", r, "--json", env=env)
        assert after.code == 0 and after.json()["phase"] == "aborted" and after.json()["run_id"] == doc["run_id"]

    missing = await signoff("release", "status", "rel-does-not-exist-42", "--json", env=env)
    assert missing.code == 1 and "no release rel-does-not-exist-42" in one_sentence(missing.json()["error"])
    assert not deploys.exists()  # aborted before promotion: nothing was deployed


async def test_policy_eval_of_the_gated_example_shows_the_gate_it_will_wait_at() -> None:
    """The policy's gates merged with the file's: release-gated.yaml waits for 2 release managers."""
    run = await signoff("policy", "eval", str(REPO / "examples" / "release-gated.yaml"), "--json")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert [(g["name"], g["required"], g["from_groups"]) for g in doc["gates"]] == [("production", 2, ["release-managers"])]
    assert doc["facts"]["paths"] == ["docs/checkout.md"] and doc["facts"]["paths_source"] == "declared"
