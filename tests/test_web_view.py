"""The read-only view (/view on the gateway): who may read it, what it refuses, what it shows.

Real components only: the Temporal dev server and a real worker, the signed audit log the
worker writes, the local OIDC issuer stub, and for the release page Prometheus, the example
service and headless Chromium (Debian's `chromium`, driven by Selenium through Debian's
`chromedriver`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.client import Client

from approvals.gateway import create_app
from signoff.client import SignoffClient
from signoff.config import Settings
from tests.helpers import dev_directory, release_spec, running_worker, wait_for, wait_phase
from tests.stubs.oidc_issuer import OidcIssuerStub

TOKEN = "view-" + uuid.uuid4().hex
HOSTILE = '<script>document.title="owned"</script><img src=x onerror="document.title=1">'


def gateway(sc: SignoffClient) -> httpx.AsyncClient:
    """The gateway app as deployed, called in this event loop (where the worker runs too)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(Settings.from_env(), client=sc)), base_url="http://gateway")


def idle_client(client: Client) -> SignoffClient:
    return SignoffClient(client, settings=Settings.from_env(), task_queue=f"tq-idle-{uuid.uuid4().hex[:8]}")


# --------------------------------------------------------------------------- access


async def test_view_is_off_in_production_without_a_token_or_oidc(monkeypatch: pytest.MonkeyPatch, client: Client) -> None:
    monkeypatch.delenv("SIGNOFF_ENVIRONMENT", raising=False)  # unset means production
    async with gateway(idle_client(client)) as http:
        for path in ("/view/", "/view/releases/anything", "/view/releases/anything/export", "/view/runbooks"):
            for headers in ({}, {"Authorization": "Bearer guessed"}):
                answer = await http.get(path, headers=headers, cookies={"signoff_view": "guessed"})
                assert answer.status_code == 404, (path, answer.status_code)
                assert "the read-only view is off in production" in answer.text and "SIGNOFF_VIEW_TOKEN" in answer.text


async def test_development_view_without_a_token_is_open_and_says_so(monkeypatch: pytest.MonkeyPatch, client: Client) -> None:
    monkeypatch.setenv("SIGNOFF_ENVIRONMENT", "development")
    async with gateway(idle_client(client)) as http:
        answer = await http.get("/view/")
        assert answer.status_code == 200
        assert "anyone (development, no token configured)" in answer.text


async def test_view_without_or_with_a_wrong_token_is_refused_and_shows_nothing(monkeypatch: pytest.MonkeyPatch, client: Client, task_queue: str) -> None:
    monkeypatch.setenv("SIGNOFF_VIEW_TOKEN", TOKEN)
    async with running_worker(client, task_queue) as sc:
        rid = f"secret-{uuid.uuid4().hex[:8]}"
        await sc.start_release(release_spec(change={"summary": "the secret change", "paths": ["docs/a.md"]}), release_id=rid)
        await wait_phase(sc, rid, "succeeded")
        async with gateway(sc) as http:
            attempts: list[dict[str, Any]] = [
                {},
                {"headers": {"Authorization": f"Bearer {TOKEN[:-1]}"}},
                {"headers": {"Authorization": f"Basic {TOKEN}"}},
                {"cookies": {"signoff_view": TOKEN.upper()}},
                {"headers": {"Authorization": "Bearer "}},
            ]
            for attempt in attempts:
                for path in ("/view/", f"/view/releases/{rid}", f"/view/releases/{rid}/export"):
                    http.cookies.clear()
                    answer = await http.get(path, **attempt)
                    assert answer.status_code == 401, (attempt, path)
                    assert rid not in answer.text and "the secret change" not in answer.text
                    assert "log in" in answer.text.lower()
            http.cookies.clear()
            assert rid in (await http.get("/view/", headers={"Authorization": f"Bearer {TOKEN}"})).text
            # a browser logs in once with the form; the cookie is HttpOnly, SameSite=Strict, scoped to /view
            login = await http.post("/view/login", data={"token": TOKEN}, follow_redirects=False)
            assert login.status_code == 303
            cookie = login.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie and "path=/view" in cookie
            page = await http.get(f"/view/releases/{rid}")
            assert page.status_code == 200 and "the secret change" in page.text


@pytest.fixture
def issuer() -> Iterator[OidcIssuerStub]:
    with OidcIssuerStub() as stub:
        yield stub


async def test_oidc_login_admits_directory_people_only(
    monkeypatch: pytest.MonkeyPatch, client: Client, issuer: OidcIssuerStub, tmp_path: Path
) -> None:
    directory = dev_directory(tmp_path, monkeypatch)
    doc = yaml.safe_load(directory.read_text())
    for person in doc["people"]:
        if person["email"] == "carol@example.com":
            person["oidc"] = [{"issuer": issuer.issuer, "subject": "carol-sub"}]
    directory.write_text(yaml.safe_dump(doc))
    rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "a subject nobody registered": (issuer.mint("mallory-sub"), "is not a person in the approver directory"),
        "expired": (issuer.mint("carol-sub", issued_at=time.time() - 1000, lifetime=300), "has expired"),
        "forged with another key": (issuer.mint("carol-sub", key=rogue, kid="rogue"), "signed by a key that"),
        "for another audience": (issuer.mint("carol-sub", audience="another-app"), "audience is 'another-app'"),
        "from another issuer": (issuer.mint("carol-sub", issuer="https://evil.example"), "issuer 'https://evil.example'"),
        "not a JWT": ("not-a-token", "is not a JWT"),
    }
    async with gateway(idle_client(client)) as http:
        for name, (token, why) in refused.items():
            answer = await http.get("/view/", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 401, name
            assert why in answer.text.replace("&#39;", "'"), (name, answer.text[-600:])
        answer = await http.get("/view/", headers={"Authorization": f"Bearer {issuer.mint('carol-sub')}"})
        assert answer.status_code == 200
        assert "read-only · carol@example.com" in answer.text


async def test_the_view_has_no_way_to_change_anything(monkeypatch: pytest.MonkeyPatch, client: Client) -> None:
    """No action route exists: every method but GET (and the login form) is refused, authenticated or not."""
    monkeypatch.setenv("SIGNOFF_VIEW_TOKEN", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with gateway(idle_client(client)) as http:
        for path in ("/view/", "/view/releases/r1", "/view/releases/r1/export", "/view/runbooks", "/view/runbooks/r1"):
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                answer = await http.request(method, path, headers=auth, json={"decision": "approve", "gate": "production"})
                assert answer.status_code == 405, (method, path)
        page = await http.get("/view/", headers=auth)
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert "<script" not in page.text


# --------------------------------------------------------------------------- what the pages show


def audit_lines(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(line) for line in settings.audit_log.read_text().splitlines() if line.strip()]


async def test_hostile_text_is_shown_as_text_and_a_tampered_record_is_marked(
    monkeypatch: pytest.MonkeyPatch, client: Client, task_queue: str
) -> None:
    """An agent writes markup into its change summary; an attacker with write access to the log
    rewrites an outcome. The page shows the first as text and marks the second as failing."""
    monkeypatch.setenv("SIGNOFF_VIEW_TOKEN", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_worker(client, task_queue) as sc:
        rid = f"hostile-{uuid.uuid4().hex[:8]}"
        await sc.start_release(release_spec(change={"summary": HOSTILE, "paths": ["docs/a.md"]}), release_id=rid)
        await wait_phase(sc, rid, "succeeded")
        settings = Settings.from_env()
        await wait_for(sc, rid, lambda s: any(e.get("kind") == "release_outcome" and e.get("workflow_id") == rid for e in audit_lines(settings)))
        async with gateway(sc) as http:
            page = await http.get(f"/view/releases/{rid}", headers=auth)
            assert page.status_code == 200
            assert HOSTILE not in page.text and "&lt;script&gt;document.title=" in page.text
            assert "All " in page.text and "records verify" in page.text and "FAILED" not in page.text
            bundle = await http.get(f"/view/releases/{rid}/export", headers=auth)
            assert bundle.status_code == 200 and "attachment" in bundle.headers["content-disposition"]
            assert bundle.json()["workflow_id"] == rid and bundle.json()["envelopes"]

            # the attacker rewrites the outcome of the release's last record in place
            entries = audit_lines(settings)
            target = max((e for e in entries if e.get("workflow_id") == rid), key=lambda e: e["index"])
            statement = json.loads(base64.b64decode(target["envelope"]["payload"]))
            statement["predicate"]["outcome"] = "approved-by-the-board"
            target["envelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
            settings.audit_log.write_text("".join(json.dumps(e) + "\n" for e in entries))

            page = await http.get(f"/view/releases/{rid}", headers=auth)
            assert page.status_code == 200
            assert "Verification found problems" in page.text
            row = page.text.split(f'id="record-{target["index"]}"', 1)[1].split("</tr>", 1)[0]
            assert "approved-by-the-board" in row and "FAILED" in row and "does not verify" in row
            refused = await http.get(f"/view/releases/{rid}/export", headers=auth)
            assert refused.status_code == 503 and "fails verification" in refused.text


async def test_unknown_release_is_one_sentence(monkeypatch: pytest.MonkeyPatch, client: Client) -> None:
    monkeypatch.setenv("SIGNOFF_VIEW_TOKEN", TOKEN)
    async with gateway(idle_client(client)) as http:
        answer = await http.get("/view/releases/no-such-release", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 404
        assert "no release no-such-release exists" in answer.text and "Traceback" not in answer.text


async def test_unreachable_temporal_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.prom import free_port

    monkeypatch.setenv("SIGNOFF_VIEW_TOKEN", TOKEN)
    monkeypatch.setenv("SIGNOFF_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    app = create_app(Settings.from_env())  # connects lazily, like a gateway started while Temporal is down
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        for path in ("/view/", "/view/releases/r1", "/view/runbooks"):
            answer = await http.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 503, path
            assert "cannot reach Temporal at 127.0.0.1:" in answer.text and "Traceback" not in answer.text


async def test_records_without_the_public_key_are_shown_as_not_verified(
    monkeypatch: pytest.MonkeyPatch, client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A gateway that cannot check signatures never shows records as verified."""
    monkeypatch.setenv("SIGNOFF_VIEW_TOKEN", TOKEN)
    async with running_worker(client, task_queue) as sc:
        rid = f"nokey-{uuid.uuid4().hex[:8]}"
        await sc.start_release(release_spec(), release_id=rid)
        await wait_phase(sc, rid, "succeeded")
        settings = Settings.from_env()
        await wait_for(sc, rid, lambda s: any(e.get("kind") == "release_outcome" and e.get("workflow_id") == rid for e in audit_lines(settings)))
        monkeypatch.setenv("SIGNOFF_KEY_PATH", str(tmp_path / "elsewhere" / "orchestrator.ed25519.pub"))
        async with gateway(sc) as http:
            page = await http.get(f"/view/releases/{rid}", headers={"Authorization": f"Bearer {TOKEN}"})
            assert page.status_code == 200
            assert "not verified: there is no public key at" in page.text
            assert ">verified<" not in page.text and "records verify" not in page.text
            export = await http.get(f"/view/releases/{rid}/export", headers={"Authorization": f"Bearer {TOKEN}"})
            assert export.status_code == 503 and "no public key" in export.text


# --------------------------------------------------------------------------- the chart on its own


def test_chart_draws_every_bound_and_survives_no_values() -> None:
    from approvals.web.chart import measurement_chart, thresholds_of
    from signoff.models import AnalysisSpec, Measurement

    spec = AnalysisSpec.model_validate({"query": "q", "success": {"in_range": [0.1, 0.4]}, "failure": {"greater_than": 0.9}})
    bounds = thresholds_of(spec)
    assert [(t.kind, t.op, t.value) for t in bounds] == [("success", "≥", 0.1), ("success", "≤", 0.4), ("failure", ">", 0.9)]
    empty = [Measurement(metric="m", verdict="inconclusive", message="no data") for _ in range(3)]
    svg = measurement_chart("m", empty, [])
    assert svg.count('class="point inconclusive"') == 3 and 'fill="none"' in svg
    hostile = measurement_chart('"><script>x</script>', [Measurement(metric="m", value=0.95, verdict="failed", message="<b>")], bounds)
    assert "<script>" not in hostile and "<b>" not in hostile and hostile.count('class="threshold"') == 3


async def test_list_filters_by_awaiting_person_phase_service_and_agent(monkeypatch: pytest.MonkeyPatch, client: Client, task_queue: str) -> None:
    from tests.helpers import gated_spec

    monkeypatch.setenv("SIGNOFF_VIEW_TOKEN", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_worker(client, task_queue) as sc:
        waiting, by_agent, other = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("waiting", "agent", "other"))
        await sc.start_release(gated_spec(), release_id=waiting)
        await sc.start_release(release_spec(agent={"id": "release-bot"}), release_id=by_agent)
        await sc.start_release(release_spec(service="payments"), release_id=other)
        await wait_phase(sc, waiting, "awaiting_approval")
        await wait_phase(sc, by_agent, "succeeded")
        await wait_phase(sc, other, "succeeded")
        async with gateway(sc) as http:

            async def listed(**query: str) -> set[str]:
                page = await http.get("/view/", params=query, headers=auth)
                assert page.status_code == 200
                return {rid for rid in (waiting, by_agent, other) if f">{rid}</a>" in page.text}

            assert await listed() == {waiting, by_agent, other}
            assert await listed(awaiting="alice@example.com") == {waiting}
            assert await listed(awaiting="carol@example.com") == set()  # not in release-managers
            assert await listed(phase="awaiting_approval") == {waiting}
            assert await listed(phase="succeeded", service="payments") == {other}
            assert await listed(service="checkout") == {waiting, by_agent}
            assert await listed(agent="release-bot") == {by_agent}
            assert await listed(agent="ghost-bot") == set()


async def test_release_gone_from_temporal_is_shown_from_its_signed_records(
    monkeypatch: pytest.MonkeyPatch, client: Client, task_queue: str
) -> None:
    """Past retention Temporal forgets a release; the auditor's page still shows its records."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
    from temporalio.service import RPCError

    monkeypatch.setenv("SIGNOFF_VIEW_TOKEN", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_worker(client, task_queue) as sc:
        rid = f"forgotten-{uuid.uuid4().hex[:8]}"
        await sc.start_release(release_spec(service="payments"), release_id=rid)
        await wait_phase(sc, rid, "succeeded")
        settings = Settings.from_env()
        await wait_for(sc, rid, lambda s: any(e.get("kind") == "release_outcome" and e.get("workflow_id") == rid for e in audit_lines(settings)))
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=rid))
    )
    for _ in range(600):  # deletion is asynchronous on the server
        try:
            await client.get_workflow_handle(rid).describe()
        except RPCError:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"Temporal still holds {rid}")
    async with gateway(idle_client(client)) as http:
        page = await http.get(f"/view/releases/{rid}", headers=auth)
        assert page.status_code == 200
        assert "Temporal no longer holds this release" in page.text
        assert "payments · unknown · requested by person:dana@example.com" in page.text
        assert '<span class="phase succeeded">succeeded</span>' in page.text
        assert "records verify" in page.text and "release_outcome" in page.text
        missing = await http.get("/view/releases/never-existed", headers=auth)
        assert missing.status_code == 404
