"""`/signoff runbook …`: on-call engineers run certified runbooks from chat.

    /signoff runbook list
    /signoff runbook run restart-service service=checkout
    /signoff runbook dry-run restart-service service=checkout

Nothing is decided here: the person is mapped to their canonical identity, the run is started
through the client facade, and the RunbookWorkflow refuses anything uncertified, unauthorised
or with bad parameters. Progress is posted by the workflow in a thread under the message this
command posts.
"""

from __future__ import annotations

from signoff.errors import UsageError
from signoff.runbooks import catalogue
from signoff.slack_blocks import escape

from approvals.slack.commands import CommandContext, register_subcommand

USAGE = "runbook list | runbook run NAME key=value … | runbook dry-run NAME key=value …"


def parse_params(words: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"parameter {word!r} is not key=value; write it like service=checkout.")
        params[key] = value
    return params


async def runbook_command(ctx: CommandContext) -> str:
    if not ctx.args:
        raise UsageError(f"use `/signoff {USAGE}`.")
    verb, rest = ctx.args[0].lower(), ctx.args[1:]
    if verb == "list":
        rows = catalogue(ctx.settings)
        if not rows:
            return "No runbooks are defined."
        return "\n".join(
            f"• `{escape(r['name'])}` {escape(str(r.get('version', '')))} — {escape(str(r.get('description', '')))}"
            + ("" if r.get("certified") else " *(not certified: cannot run)*")
            for r in rows
        )
    if verb not in ("run", "dry-run"):
        raise UsageError(f"unknown runbook verb {verb!r}; use `/signoff {USAGE}`.")
    if not rest:
        raise UsageError(f"name the runbook: `/signoff runbook {verb} restart-service service=checkout`.")
    name, params = rest[0], parse_params(rest[1:])
    identity = await ctx.identity()
    dry_run = verb == "dry-run"
    reply_to: dict[str, str] = {}
    if ctx.web is not None and ctx.channel_id:
        head = await ctx.web.chat_postMessage(
            channel=ctx.channel_id,
            text=f"{'Dry run of' if dry_run else 'Running'} runbook `{escape(name)}` for {escape(identity)} with {escape(str(params))}; progress in this thread.",
        )
        reply_to = {"channel": ctx.channel_id, "ts": head["ts"]}
    import uuid

    from signoff.models import StartRunbook
    from signoff.trust.evidence import run_expectations

    client = await ctx.client()
    run_id = f"run-{name}-{uuid.uuid4().hex[:10]}"
    body = run_expectations(StartRunbook(run_id=run_id, runbook=name, params=params, requested_by=identity, dry_run=dry_run))["body"]
    proof = ctx.signer.attest(
        action="runbook_run", subject=run_id, person=identity, channel="slack", body=body,
        external={"user": ctx.slack_user_id, "team": ctx.team_id, "channel": ctx.channel_id},
    )
    status = await client.runbooks.run(name, params=params, identity=identity, channel="slack", dry_run=dry_run, reply_to=reply_to, run_id=run_id, proof=proof)
    if status.phase == "refused":
        return f"Runbook `{escape(name)}` was refused: {escape(status.reason or '')}"
    return f"Runbook `{escape(name)}` {status.version} started as `{escape(status.run_id)}` ({status.phase}); progress is posted in the thread."


register_subcommand("runbook", runbook_command, usage=USAGE, summary="list and run certified runbooks (on-call)")
