"""The `signoff` command line: the contract in DESIGN.md, exactly.

Every command takes `--json` and then prints one JSON document on stdout. Exit 0 on success,
1 when the request was refused or failed (the JSON says why in "error"), 2 for usage errors.
Only `SignoffError` is caught: it explains itself in one sentence, without a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import click
from pydantic import BaseModel

from signoff.config import Settings
from signoff.errors import NotFound, SignoffError, UsageError


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class Out:
    """Prints either one JSON document or human text, and remembers the exit status."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, doc: Any, text: str | Callable[[], str], *, ok: bool = True) -> None:
        if self.as_json:
            click.echo(json.dumps(_jsonable(doc), indent=2, sort_keys=False, default=str))
        else:
            click.echo(text() if callable(text) else text)
        if not ok:
            sys.exit(1)

    def fail(self, err: SignoffError) -> None:
        if self.as_json:
            click.echo(json.dumps({"error": err.diagnostics(), "kind": type(err).__name__}))
        else:
            click.echo(f"error: {err.diagnostics()}", err=True)
        sys.exit(err.exit_code)


def command(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Wrap an async command: add --json, run it, turn SignoffError into one sentence."""

    @click.option("--json", "as_json", is_flag=True, help="print exactly one JSON document on stdout")
    @functools.wraps(fn)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> None:
        out = Out(as_json)
        try:
            asyncio.run(fn(out, *args, **kwargs))
        except SignoffError as e:
            out.fail(e)
        except KeyboardInterrupt:
            sys.exit(130)
        finally:
            _notices()
            _CLIENTS.clear()

    return wrapper


_CLIENTS: list[Any] = []


async def _client() -> Any:
    """The facade as the command line uses it: requests say channel `cli`, and say which
    credential signed them when it is the dev stack's (see `_notices`)."""
    from signoff.client import SignoffClient, connect_temporal

    settings = Settings.from_env()
    client = SignoffClient(await connect_temporal(settings), settings=settings, channel="cli")
    _CLIENTS.append(client)
    return client


def _notices() -> None:
    """On the dev stack, say on stderr that a dev key signed (never mixed into --json stdout)."""
    for client in _CLIENTS:
        for notice in client.notices:
            click.echo(notice, err=True)


def _email(identity: str) -> str:
    """--as EMAIL: the canonical identity, or a usage error (exit 2)."""
    from signoff.models import check_email

    try:
        return check_email(identity)
    except ValueError:
        raise UsageError(f"--as needs an email address (the canonical identity), not {identity!r}.") from None


def _status_line(s: Any) -> str:
    gates = "; ".join(f"{g.name}: {g.state} {g.progress}" for g in s.gates)
    extra = f" — {s.reason}" if s.reason else ""
    return f"{s.release_id}  {s.service}  {s.phase.value}  {s.artifact_digest or '-'}" + (f"  [{gates}]" if gates else "") + extra


def _status_text(s: Any) -> str:
    """The status line, then what approvers must see (what will run) and the window state."""
    from signoff.plan_view import approval_rows

    lines = [_status_line(s)]
    lines += [f"  {label}: {value}" for label, value in approval_rows(s, full=f"signoff release status {s.release_id} --json")]
    if s.window is not None and not s.window.open:
        opens = f" (opens {s.window.next_open.isoformat()})" if s.window.next_open else ""
        lines.append(f"  Waiting for: {'; '.join(s.window.reasons)}{opens}")
    if s.window_override is not None:
        lines.append(f"  Window overridden by {s.window_override.by}: {s.window_override.reason}")
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="signoff")
def cli() -> None:
    """signoff: ship changes safely, with durable workflows, human gates and signed records."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point.

    The exit goes through os._exit after flushing: the Temporal SDK's native runtime can abort
    the interpreter while it finalizes (temporalio/sdk-python#300), which would turn an answer
    already printed into a crash an agent then retries.
    """
    try:
        _run(sys.argv[1:] if argv is None else argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            click.echo(e.code, err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(args: list[str]) -> None:
    """click's own usage errors also honour --json and exit 2."""
    try:
        cli.main(args=args, prog_name="signoff", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.format_message())
        sys.exit(0)
    except click.UsageError as e:
        where = f" See `{e.ctx.command_path} --help`." if e.ctx is not None else ""
        message = f"{e.format_message().rstrip('.')}.{where}"
        if "--json" in args:
            click.echo(json.dumps({"error": message, "kind": "UsageError"}))
        else:
            click.echo(f"error: {message}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(json.dumps({"error": e.format_message()}) if "--json" in args else f"error: {e.format_message()}", err="--json" not in args)
        sys.exit(e.exit_code)


# ----------------------------------------------------------------------------- processes


@cli.command()
@click.option("--no-prometheus", is_flag=True, help="do not start Prometheus even when installed")
@click.option("--demo", "run_demo", is_flag=True, help="run the demo releases once the stack is up")
@click.option("--exit", "exit_after", is_flag=True, help="with --demo: stop the stack when the demo ends (exit 1 if it failed)")
@click.option("--flags", "demo_flags", is_flag=True, help="with --demo: deliver the demo releases behind a feature flag")
def dev(no_prometheus: bool, run_demo: bool, exit_after: bool, demo_flags: bool) -> None:
    """Embedded stack: Temporal dev server, worker, gateway, Prometheus; Ctrl-C stops all."""
    from workers.dev import run_dev

    try:
        code = asyncio.run(
            run_dev(Settings.from_env(), prometheus=not no_prometheus, demo=run_demo, exit_after_demo=exit_after, demo_flags=demo_flags)
        )
    except SignoffError as e:
        Out(False).fail(e)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


@cli.command()
@click.option("--schedules", is_flag=True, help="also create or update signoff's Temporal Schedules (the drift check, every SIGNOFF_DRIFT_INTERVAL; the reaper, every SIGNOFF_REAPER_INTERVAL)")
def worker(schedules: bool) -> None:
    """A worker for the task queue."""
    import logging

    from workers.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(run_worker(Settings.from_env(), schedules=schedules))
    except SignoffError as e:
        Out(False).fail(e)
    except KeyboardInterrupt:
        pass


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="default SIGNOFF_GATEWAY_PORT or 8700")
def gateway(host: str, port: int | None) -> None:
    """The approvals HTTP gateway (Slack and Jira endpoints, the read-only view /view, /healthz, /metrics)."""
    import uvicorn

    from approvals.gateway import create_app

    settings = Settings.from_env()
    uvicorn.run(create_app(settings), host=host, port=port or settings.gateway_port, log_level="info")


@cli.command()
@click.option("--agent", "agent_id", default=None, metavar="ID", help="the agent this server acts as (default SIGNOFF_AGENT_ID)")
def mcp(agent_id: str | None) -> None:
    """Model Context Protocol server on stdio, for agents: plan, start, watch, explain and abort
    releases as one agent; it can never approve."""
    from signoff.mcp_server import agent_from, build_server

    settings = Settings.from_env()
    try:
        server = build_server(settings, agent_from(settings, agent_id))
    except SignoffError as e:
        Out(False).fail(e)
    server.run("stdio")


@cli.command()
@click.option("--flags", is_flag=True, help="deliver both behind a feature flag (deploy.target: flag)")
@command
async def demo(out: Out, flags: bool) -> None:
    """On a running dev stack: a good release that completes and a bad one rolled back."""
    from workers.demo import run_demo

    result = await run_demo(Settings.from_env(), echo=(lambda line: None) if out.as_json else click.echo, flags=flags)
    out.emit(result, "demo finished: " + ", ".join(f"{r['release_id']} → {r['phase']}" for r in result["releases"]), ok=result["ok"])


# ----------------------------------------------------------------------------- releases


@cli.group()
def release() -> None:
    """Start, watch, promote and abort releases."""


@release.command("start")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--id", "release_id", default=None, help="release id (default: derived from service + digest)")
@click.option("--wait", is_flag=True, help="wait until the release ends")
@command
async def release_start(out: Out, file: Path, release_id: str | None, wait: bool) -> None:
    from signoff.releasefile import load_release_file

    load_release_file(file)  # refuse bad input before touching Temporal
    client = await _client()
    status = await client.start_release(file, release_id=release_id, wait=wait)
    failed = wait and status.phase.value not in ("succeeded",)
    out.emit(status, lambda: _status_line(status), ok=not failed)


@release.command("status")
@click.argument("release_id")
@command
async def release_status(out: Out, release_id: str) -> None:
    client = await _client()
    status = await client.status(release_id)
    out.emit(status, lambda: _status_text(status))


@release.command("list")
@click.option("--phase", default=None, help="only releases in this phase")
@click.option("--awaiting", default=None, metavar="EMAIL", help="only releases waiting for this person")
@command
async def release_list(out: Out, phase: str | None, awaiting: str | None) -> None:
    from signoff.models import Phase

    if phase is not None and phase not in {p.value for p in Phase}:
        raise UsageError(f"unknown phase {phase!r}; use one of: {', '.join(p.value for p in Phase)}.")
    client = await _client()
    releases = await client.list_releases(phase=phase, awaiting=awaiting)
    freezes = await client.freeze_status()

    def text() -> str:
        lines = [_status_line(s) for s in releases] or ["no releases"]
        return "\n".join(lines + [f"frozen: {_freeze_line(f)}" for f in freezes])

    out.emit({"releases": releases, "freezes": freezes}, text)


@release.command("promote")
@click.argument("release_id")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@command
async def release_promote(out: Out, release_id: str, identity: str) -> None:
    client = await _client()
    result = await client.promote(release_id, identity=identity)
    out.emit(result, result["reason"])


@release.command("abort")
@click.argument("release_id")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--reason", required=True)
@command
async def release_abort(out: Out, release_id: str, identity: str, reason: str) -> None:
    client = await _client()
    result = await client.abort(release_id, identity=identity, reason=reason)
    out.emit(result, result["reason"])


@release.command("override")
@click.argument("release_id")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--reason", required=True)
@command
async def release_override(out: Out, release_id: str, identity: str, reason: str) -> None:
    """Promote a release waiting for its deploy window or a freeze now (the policy names who may)."""
    client = await _client()
    result = await client.override_window(release_id, identity=_email(identity), reason=reason)
    out.emit(result, result["reason"])


@release.command("resolve")
@click.argument("release_id")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--rollback", "decision", flag_value="rollback", help="redeploy the previous digest")
@click.option("--forward", "decision", flag_value="forward", help="ship the held digest to 100% anyway")
@click.option("--reason", required=True)
@command
async def release_resolve(out: Out, release_id: str, identity: str, decision: str | None, reason: str) -> None:
    """Decide a canary held after a failed analysis (canary.on_failure: hold)."""
    if decision is None:
        raise UsageError("say what to do with the held release: --rollback or --forward.")
    client = await _client()
    result = await client.resolve_hold(release_id, identity=_email(identity), decision=decision, reason=reason)
    out.emit(result, result["reason"])


# ----------------------------------------------------------------------------- freezes


@cli.group()
def freeze() -> None:
    """Start, end and show change freezes: promotions in their scope wait until they end."""


def _freeze_line(f: dict[str, Any]) -> str:
    scope = f"{f.get('service') or 'every service'} in {f.get('environment') or 'every environment'}"
    until = f" until {f['until']}" if f.get("until") else ""
    return f"{f['id']}  {scope}{until}  by {f['by']}: {f['reason']}"


@freeze.command("start")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--reason", required=True)
@click.option("--service", default=None, help="only this service (default: every service)")
@click.option("--environment", default=None, help="only this environment (default: every environment)")
@click.option("--until", default=None, metavar="TIME", help="ends by itself: an ISO time or a span such as 2h or 3d")
@click.option("--pause-canaries", is_flag=True, help="also pause running canaries at their current weight")
@command
async def freeze_start(out: Out, identity: str, reason: str, service: str | None, environment: str | None, until: str | None, pause_canaries: bool) -> None:
    client = await _client()
    result = await client.freeze_start(identity=_email(identity), reason=reason, service=service, environment=environment, until=until, pause_canaries=pause_canaries)
    out.emit(result, lambda: "freeze started: " + _freeze_line(result["freeze"]))


@freeze.command("end")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--id", "freeze_id", default=None, help="end only this freeze (default: every freeze in force)")
@command
async def freeze_end(out: Out, identity: str, freeze_id: str | None) -> None:
    client = await _client()
    result = await client.freeze_end(identity=_email(identity), freeze_id=freeze_id)
    out.emit(result, f"ended: {', '.join(result['ended'])}")


@freeze.command("status")
@command
async def freeze_status(out: Out) -> None:
    client = await _client()
    freezes = await client.freeze_status()
    out.emit({"freezes": freezes}, lambda: "\n".join(_freeze_line(f) for f in freezes) or "no freeze in force")


# ----------------------------------------------------------------------------- approvals


async def _decide(out: Out, release_id: str, identity: str, decision: str, gate: str | None, reason: str, digest: str | None, plan: str | None = None) -> None:
    from signoff.models import ApprovalAttempt

    identity = _email(identity)
    client = await _client()
    attempt = ApprovalAttempt(
        release_id=release_id, gate=gate, identity=identity, channel="cli", decision=decision, reason=reason, digest=digest, plan=plan  # type: ignore[arg-type]
    )
    result = await client.submit_approval(attempt)
    # The workflow's answer already ends with the gate's progress ("approval recorded; 1 of 2: …").
    out.emit(result, f"{'accepted' if result.accepted else 'refused'}: {result.reason}", ok=result.accepted)


@cli.command()
@click.argument("release_id")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--gate", default=None, help="gate name (default: the open gate)")
@click.option("--reason", default="")
@click.option("--digest", default=None, help="the artifact digest you reviewed (approvals bind to evidence)")
@click.option("--plan", default=None, help="the plan hash you reviewed (release status shows it; approvals bind to it)")
@click.option("--revoke", is_flag=True, help="withdraw your approval before the quorum")
@command
async def approve(out: Out, release_id: str, identity: str, gate: str | None, reason: str, digest: str | None, plan: str | None, revoke: bool) -> None:
    """Approve a release at a gate (or --revoke your approval)."""
    await _decide(out, release_id, identity, "revoke" if revoke else "approve", gate, reason, digest, plan)


@cli.command()
@click.argument("release_id")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--reason", required=True)
@click.option("--gate", default=None)
@click.option("--digest", default=None)
@command
async def reject(out: Out, release_id: str, identity: str, reason: str, gate: str | None, digest: str | None) -> None:
    """Reject a release at a gate (a veto closes the gate)."""
    await _decide(out, release_id, identity, "reject", gate, reason, digest)


# ----------------------------------------------------------------------------- policy and provenance


@cli.group()
def policy() -> None:
    """Evaluate and test the Rego release policy."""


@policy.command("eval")
@click.argument("file", type=click.Path(path_type=Path))
@command
async def policy_eval(out: Out, file: Path) -> None:
    """Print the policy's decision for a release file without starting anything."""
    from signoff.policy import preview_release_file

    settings = Settings.from_env()
    decision, facts = preview_release_file(file, policy_dir=settings.policy_dir)
    doc = {
        "tier": decision.tier,
        "gates": [g.model_dump(mode="json") for g in decision.gates],
        "denials": decision.denials,
        "reasons": decision.reasons,
        "policy_sha256": decision.policy_sha256,
        "facts": facts,
    }

    def text() -> str:
        lines = [f"tier: {decision.tier}  (policy {decision.policy_sha256[:12]})"]
        lines += [f"gate {g.name}: {g.required} approver(s) from {', '.join(g.from_groups) or 'anyone'}" + (f", quotas {g.quotas}" if g.quotas else "") for g in decision.gates]
        lines += [f"denied: {d}" for d in decision.denials]
        lines += [f"why: {r}" for r in decision.reasons]
        lines.append(f"paths ({facts.get('paths_source')}): {', '.join(facts.get('paths') or []) or 'none'}")
        if facts.get("change", {}).get("authors"):
            lines.append(f"authors: {', '.join(facts['change']['authors'])} (they cannot approve)")
        return "\n".join(lines)

    out.emit(doc, text, ok=not decision.denials)


@policy.command("test")
@command
async def policy_test(out: Out) -> None:
    """Run the Rego unit tests (test_ rules) in policies/."""
    from signoff.policy import run_policy_tests

    results = run_policy_tests(Settings.from_env().policy_dir)
    failed = [name for name, ok in results if not ok]
    doc = {"passed": len(results) - len(failed), "failed": len(failed), "failures": failed}
    out.emit(doc, lambda: "\n".join([f"FAIL {n}" for n in failed] + [f"{doc['passed']} passed, {doc['failed']} failed"]), ok=not failed)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--bundle", required=True, type=click.Path(path_type=Path))
@click.option("--identity", required=True, help="expected signer identity (SAN), e.g. a workflow URL")
@click.option("--issuer", required=True, help="expected OIDC issuer URL (always pinned)")
@click.option("--offline", is_flag=True, help="use the embedded trust root; no network")
@click.option("--staging", is_flag=True, help="the Sigstore staging instance")
@command
async def verify(out: Out, artifact: Path, bundle: Path, identity: str, issuer: str, offline: bool, staging: bool) -> None:
    """Verify an artifact against its Sigstore bundle and a pinned identity."""
    from activities.provenance import verify_artifact

    for p, what in ((artifact, "artifact"), (bundle, "bundle")):
        if not p.is_file():
            raise UsageError(f"{what} {p} does not exist; check the path.")
    result = verify_artifact(artifact, bundle, identity=identity, issuer=issuer, offline=offline, staging=staging)
    out.emit(result, f"verified: {artifact} signed by {result.identity} ({result.issuer})")


# ----------------------------------------------------------------------------- audit and keys


@cli.group()
def keys() -> None:
    """The orchestrator's signing key."""


@keys.command("init")
@click.option("--force", is_flag=True, help="replace an existing key (old records then need the old public key)")
@click.option("--person", "person", default=None, metavar="EMAIL", help="a personal key for EMAIL (prints the directory entry to register)")
@click.option("--agent", "agent", default=None, metavar="ID", help="an agent's key (prints the registry entry to register)")
@click.option("--gateway", "gateway", is_flag=True, help="the approvals gateway's attestation key")
@click.option("--out", "out_path", default=None, type=click.Path(path_type=Path), help="where to write the private key")
@command
async def keys_init(out: Out, force: bool, person: str | None, agent: str | None, gateway: bool, out_path: Path | None) -> None:
    """The orchestrator's signing key, or a person's, an agent's or the gateway's key."""
    settings = Settings.from_env()
    if sum(bool(x) for x in (person, agent, gateway)) > 1:
        raise UsageError("give one of --person, --agent or --gateway.")
    if not (person or agent or gateway):
        from signoff.audit import init_keys

        info = init_keys(out_path or settings.key_path, force=force)
        doc = info.to_dict()
        out.emit(doc, lambda: "\n".join(f"{k}: {v}" for k, v in doc.items() if k != "public_key_pem"))
        return
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from signoff.trust.keys import keyid, public_pem, write_private_key

    if person:
        who, kind = _email(person), "person"
    elif agent:
        who, kind = agent, "agent"
    else:
        who, kind = settings.gateway_id, "gateway"
    default = settings.gateway_key_path if gateway and settings.gateway_key_path else settings.state_dir / "keys" / f"{kind}-{who}.ed25519"
    path = Path(out_path or default).expanduser()
    if path.exists() and not force:
        raise SignoffError(f"a key already exists at {path}; keep it, or pass --force to replace it (then register the new public key).")
    key = Ed25519PrivateKey.generate()
    try:
        write_private_key(path, key, replace=force)
    except OSError as e:
        raise SignoffError(f"cannot write the key to {path} ({e.strerror}); choose another --out path.") from e
    pem = public_pem(key.public_key())
    where = {"person": "the approver directory (SIGNOFF_DIRECTORY), under people", "agent": "the agent registry (SIGNOFF_AGENTS), under agents", "gateway": "the agent registry (SIGNOFF_AGENTS), under gateways"}[kind]
    field = {"person": "email", "agent": "id", "gateway": "id"}[kind]
    entry = f"- {field}: {who}\n  keys:\n    - |\n" + "".join(f"      {line}\n" for line in pem.strip().splitlines())
    env = "SIGNOFF_GATEWAY_KEY" if gateway else "SIGNOFF_IDENTITY_KEY"
    doc = {"principal": f"{kind}:{who}", "path": str(path), "keyid": keyid(key.public_key()), "public_key_pem": pem, "register_in": where, "entry": entry, "use": f"{env}={path}"}
    out.emit(doc, lambda: f"wrote {path} (keyid {doc['keyid'][:16]}…)\nregister this in {where}:\n{entry}then sign with {env}={path}")


@keys.command("rotate")
@command
async def keys_rotate(out: Out) -> None:
    """Start a new orchestrator key; the rotation is recorded, signed by the old key and the new."""
    from signoff.audit import checkpoint_store_from_settings, rotate_keys, store_from_settings

    settings = Settings.from_env()
    result = rotate_keys(settings, store_from_settings(settings), checkpoint_store_from_settings(settings))
    out.emit(
        result,
        lambda: f"rotated: {result['old_keyid'][:16]}… → {result['new_keyid'][:16]}… at {result['rotated_at']} (entry {result['entry']})\n"
        f"trust file updated: {result['trust_file']}; give auditors the new copy\n"
        f"the old private key is at {result['retired_key']}: destroy it once no worker still runs with it",
    )


@cli.group()
def db() -> None:
    """The PostgreSQL stores (SIGNOFF_DATABASE_URL) for more than one worker or gateway."""


@db.command("init")
@click.option("--app-role", default=None, metavar="ROLE", help="the role workers and gateways connect as: may read and append, never rewrite")
@command
async def db_init(out: Out, app_role: str | None) -> None:
    """Create the tables and append-only triggers (run once, as the tables' owner)."""
    from signoff.pgstore import install_schema

    settings = Settings.from_env()
    if not settings.database_url:
        raise UsageError("set SIGNOFF_DATABASE_URL to the database (as its owner) before `signoff db init`.")
    await asyncio.to_thread(install_schema, settings.database_url, app_role)
    out.emit({"ok": True, "app_role": app_role}, "signoff tables ready" + (f"; {app_role} may read and append, never rewrite" if app_role else ""))


@cli.group()
def audit() -> None:
    """Show, verify and export signed decision records."""


@audit.command("show")
@click.argument("release_id")
@command
async def audit_show(out: Out, release_id: str) -> None:
    from signoff.audit import format_timeline, show, store_from_settings

    rows = show(release_id, store_from_settings(Settings.from_env()))
    out.emit({"release_id": release_id, "records": rows}, lambda: format_timeline(rows))


def _published_checkpoints(paths: tuple[Path, ...]) -> list[dict[str, Any]]:
    """Checkpoints kept elsewhere (`signoff audit checkpoint --json` output, or a checkpoints
    file), each tagged with where it came from."""
    found: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError as e:
            raise UsageError(f"cannot read the checkpoint file {path} ({e.strerror}); check the path.") from e
        try:
            documents = [json.loads(text)]
        except ValueError:
            try:
                documents = [json.loads(line) for line in text.splitlines() if line.strip()]
            except ValueError as e:
                raise UsageError(f"{path} is not a checkpoint (JSON or JSON lines) ({e}); give the output of `signoff audit checkpoint --json`.") from e
        for document in documents:
            record = document.get("checkpoint", document) if isinstance(document, dict) else None
            if not isinstance(record, dict) or "envelope" not in record:
                raise UsageError(f"{path} holds no signed checkpoint; give the output of `signoff audit checkpoint --json`.")
            found.append({**record, "_source": str(path)})
    return found


@audit.command("verify")
@click.argument("release_id", required=False)
@click.option("--no-history", is_flag=True, help="skip the cross-check against the Temporal history")
@click.option("--export", "export_file", default=None, type=click.Path(path_type=Path), help="verify an `audit export` file offline instead")
@click.option("--trust", "trust_file", default=None, type=click.Path(path_type=Path), help="the pinned orchestrator key ids (default: SIGNOFF_AUDIT_TRUST, or the trust file beside the key)")
@click.option("--checkpoint", "checkpoint_files", multiple=True, type=click.Path(path_type=Path), help="a checkpoint published elsewhere (repeatable)")
@command
async def audit_verify(out: Out, release_id: str | None, no_history: bool, export_file: Path | None, trust_file: Path | None, checkpoint_files: tuple[Path, ...]) -> None:
    """Check the chain, every signature against pinned keys, the checkpoints and (by default) the Temporal history."""
    from signoff.audit import (
        KEYS_WORKFLOW,
        checkpoint_store_from_settings,
        history_check,
        store_from_settings,
        trust_from_settings,
        verify as verify_log,
        verify_export,
    )

    if export_file is not None:
        try:
            document = json.loads(export_file.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"{export_file} is not an `audit export` JSON file ({e}); check the path.") from e
        checked = verify_export(document)
        out.emit(
            checked,
            lambda: "\n".join(
                [f"export of {document.get('workflow_id')}: {'ok' if checked['ok'] else 'FAILED'} ({checked['records']} records)"]
                + [f"  approved: {a['by']} {a['decision']} {str(a['digest'])[:19]}… (signed by {a['signed_by']} via {a['channel']})" for a in checked["approvals"]]
                + [f"  {p}" for p in checked["problems"]]
            ),
            ok=checked["ok"],
        )
        return
    settings = Settings.from_env()
    store = store_from_settings(settings)
    trust = trust_from_settings(settings, trust_file)
    checkpoints = checkpoint_store_from_settings(settings).all() + _published_checkpoints(checkpoint_files)
    report = verify_log(store, trust, workflow_id=release_id, checkpoints=checkpoints)
    problems: list[dict[str, Any]] = []
    guarantees: dict[str, str] = {}
    if not no_history:
        from signoff.client import connect_temporal

        client = await connect_temporal(settings)
        for wid in [release_id] if release_id else [w for w in report.workflows if w != KEYS_WORKFLOW]:
            guarantees[wid], found = await history_check(client, wid, store, report)
            problems += [p.to_dict() for p in found]
    doc = {**report.to_dict(), "history_problems": problems, "guarantees": guarantees, "ok": report.ok and not problems}

    def text() -> str:
        lines = [
            f"chain and signatures: {'ok' if report.ok else 'FAILED'} ({report.entries} entries; keys pinned by {report.trust})",
            f"checkpoints: {report.checkpoints} valid, covering {report.covered} of {report.entries} entries",
        ]
        if report.legacy:
            lines.append(f"  {report.legacy} entries predate signed chaining: their order rests on the hash chain and checkpoints only")
        lines += [f"  {p}" for p in report.to_dict().get("problems", [])]
        if not no_history:
            lines.append(f"history cross-check: {'ok' if not problems else 'FAILED'}")
            gone = sorted(w for w, g in guarantees.items() if g == "checkpoints")
            if gone:
                lines.append(
                    f"  Temporal no longer has the history of {', '.join(gone)}; relied on the signed chain, contiguous sequences, "
                    "the outcome record and the checkpoints instead"
                )
            lines += [f"  {p['message']}" for p in problems]
        return "\n".join(lines)

    out.emit(doc, text, ok=doc["ok"])


@audit.command("checkpoint")
@click.option("--new", "new", is_flag=True, help="sign a checkpoint of the log as it is now first (needs the orchestrator key)")
@command
async def audit_checkpoint(out: Out, new: bool) -> None:
    """The latest signed checkpoint of the log (size, head hash, time), to publish elsewhere."""
    from signoff.audit import checkpoint_store_from_settings, signer_from_settings, statement_of, store_from_settings, write_checkpoint

    settings = Settings.from_env()
    checkpoints = checkpoint_store_from_settings(settings)
    if new and write_checkpoint(store_from_settings(settings), checkpoints, signer_from_settings(settings)) is None:
        raise NotFound("the audit log is empty, so there is nothing to checkpoint yet.")
    found = [c for c in checkpoints.all() if "corrupt" not in c]
    if not found:
        raise NotFound(f"there is no checkpoint in {checkpoints.path} yet; run `signoff audit checkpoint --new` on the worker's machine.")
    latest = {k: v for k, v in found[-1].items() if not k.startswith("_")}
    predicate = statement_of(latest["envelope"]).get("predicate", {})
    keyids = ", ".join(str(sig.get("keyid", ""))[:16] + "…" for sig in latest["envelope"].get("signatures", []))
    out.emit(
        {"checkpoint": latest, **predicate},
        lambda: f"checkpoint: {predicate.get('size')} entries, head {str(predicate.get('head_hash'))[:16]}…, signed at {predicate.get('at')} by {keyids}\n"
        + json.dumps(latest, sort_keys=True),
    )


@audit.command("export")
@click.argument("release_id")
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path))
@command
async def audit_export(out: Out, release_id: str, out_file: Path) -> None:
    from signoff.audit import export, store_from_settings, trust_from_settings

    from signoff.trust.registry import TrustStore

    settings = Settings.from_env()
    registry = TrustStore(settings.directory_path, settings.agents_path, settings.agent_standings_path).current()
    result = export(release_id, store_from_settings(settings), trust_from_settings(settings), out_file, registry=registry)
    out.emit({"release_id": release_id, "out": str(out_file), **result}, f"exported {release_id} to {out_file}")


# ----------------------------------------------------------------------------- runbooks


@cli.group()
def runbook() -> None:
    """Certified runbooks: list, certify, run."""


@runbook.command("list")
@command
async def runbook_list(out: Out) -> None:
    from signoff.runbooks import catalogue

    rows = catalogue(Settings.from_env())
    out.emit({"runbooks": rows}, lambda: "\n".join(f"{r.get('name')}  {r.get('version')}  {'certified' if r.get('certified') else 'NOT CERTIFIED'}  {r.get('description', '')}" for r in rows) or "no runbooks")


@runbook.command("certify")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--as", "identity", required=True, metavar="EMAIL")
@command
async def runbook_certify(out: Out, file: Path, identity: str) -> None:
    from signoff.runbooks import certifiers_required, certify, load_runbook, read_lock

    from signoff.trust.credentials import resolve_credential

    identity = _email(identity)
    settings = Settings.from_env()
    lock = settings.runbook_dir / "certified.lock"
    credential = resolve_credential(settings, "person", identity)
    if credential.key_path is None:
        raise SignoffError("certifying signs the lock entry with your own key; set SIGNOFF_IDENTITY_KEY (an OIDC token cannot sign a lock entry).")
    if credential.notice:
        click.echo(credential.notice, err=True)
    entry = certify(file, identity, lock, key_path=credential.key_path)
    required = certifiers_required(load_runbook(file), settings.policy_dir)
    certifiers = sorted({e.certified_by for e in read_lock(lock) if e.name == entry.name and e.sha256 == entry.sha256})
    doc = {**entry.model_dump(mode="json"), "certifiers": certifiers, "certifiers_required": required, "complete": len(certifiers) >= required}
    more = "" if doc["complete"] else f"; the policy needs {required} distinct certifiers, so another person must certify it too"
    out.emit(doc, lambda: f"certified {entry.name} {entry.version} ({entry.sha256[:12]}) by {', '.join(certifiers)} ({len(certifiers)} of {required}){more}")


@runbook.command("run")
@click.argument("name")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE")
@click.option("--as", "identity", required=True, metavar="EMAIL")
@click.option("--dry-run", is_flag=True, help="show exactly what would happen without acting")
@click.option("--wait", is_flag=True, help="wait until the run ends")
@command
async def runbook_run(out: Out, name: str, params: tuple[str, ...], identity: str, dry_run: bool, wait: bool) -> None:
    parsed: dict[str, str] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"parameter {item!r} is not KEY=VALUE; write it like -p service=checkout.")
        parsed[key.strip()] = value
    identity = _email(identity)
    client = await _client()
    status = await client.runbooks.run(name, params=parsed, identity=identity, channel="cli", dry_run=dry_run, wait=wait or dry_run)
    def text() -> str:
        lines = [f"{status.run_id}  {status.runbook} {status.version}  {status.phase}" + (f" — {status.reason}" if status.reason else "")]
        lines += [f"  step {s.name} ({s.action}): {s.state} {s.detail}" for s in status.steps]
        lines += [f"  {c.stage} {c.name}: {c.state} {c.detail}" for c in status.checks]
        return "\n".join(lines)

    out.emit(status, text, ok=status.phase not in ("refused", "failed", "rejected"))


# Command groups kept in their own modules register themselves on `cli` when imported.
from signoff import cli_agents, cli_governance  # noqa: E402,F401
