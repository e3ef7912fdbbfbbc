"""The Slack Bolt app: Approve/Reject buttons, the reject-reason modal and `/signoff`.

Nothing here decides anything. A click is authenticated (bolt's signature verification, never
disabled, plus the configured team id, which is required, and app id), the Slack user is mapped
to a canonical identity (directory `slack_user_id`; else the `users.info` email of a full member,
never a guest, and never when the directory pins another Slack id for that email), the attempt
is attested with the gateway's key, and handed to the release workflow's `submit_approval`
Update, which verifies the attestation, authorises and records it.

Timing: every listener calls `ack()` first, so Slack's 3-second rule holds whatever Temporal is
doing; the rest runs after the HTTP response has been sent (bolt's default
`process_before_response=False`).

When the release cannot answer (Temporal down, or no worker): the click waits up to
`SIGNOFF_SLACK_SUBMIT_TIMEOUT` seconds (default 20) for the Update. A worker that comes back
within that window records the approval and the clicker gets the normal answer. Otherwise
the clicker is told, ephemerally, that the approval could not be confirmed and to click again;
clicking again is always safe because the Update id is derived from (release, gate, identity,
decision), so nothing is ever counted twice. We chose this over retrying in the background
until Temporal returns because a background retry dies with the gateway process and leaves
the person believing something that nobody is still doing.

Slack retries (`X-Slack-Retry-Num`), double deliveries and a captured click replayed later (even
after a gateway restart) are dropped by the (user, action_ts, action) key, claimed in a SQLite
file shared by the gateway's replicas, before anything is submitted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from pathlib import Path
from typing import Any, Awaitable, Callable

from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from signoff.client import SignoffClient
from signoff.config import Settings
from signoff.errors import ConfigError, NotFound, Refused, SignoffError, TemporalUnreachable
from signoff.models import ApprovalAttempt, ApprovalResult, GateStatus, check_digest

from signoff.slack_blocks import (
    APPROVE_ACTION,
    CLOSED_STATES,
    REJECT_ACTION,
    REJECT_MODAL,
    gate_message,
    progress_line,
    reject_modal,
)
from approvals.http import BodyTooLarge, read_limited
from approvals.slack import runbooks as _runbook_commands  # noqa: F401 - registers `/signoff runbook`
from approvals.slack.commands import SUBCOMMANDS, CommandContext, Subcommand, help_text, parse_command
from signoff.slack_config import SlackConfig, ensure_session, make_web_client
from signoff.directory import ApproverDirectory
from signoff.trust.attest import GatewaySigner
from approvals.deliveries import delivery_log

log = logging.getLogger("signoff.slack")

ClientFactory = Callable[[], Awaitable[SignoffClient]]

TRY_AGAIN = (
    "signoff could not confirm your {what} of {release} because the release did not answer "
    "(Temporal or its worker is down); click again in a minute — a repeated click is never counted twice."
)


class SlackApprovals:
    """The behaviour behind the listeners; the Bolt app and the HTTP adapter only route to it."""

    def __init__(
        self,
        client_factory: ClientFactory,
        *,
        settings: Settings,
        config: SlackConfig,
        directory: ApproverDirectory,
        web_client: AsyncWebClient,
        subcommands: dict[str, Subcommand],
    ) -> None:
        self.client_factory = client_factory
        self.settings = settings
        self.config = config
        self.directory = directory
        self.web = web_client
        self.subcommands = subcommands
        self.signer = GatewaySigner.from_settings(settings)
        self.deliveries = delivery_log(settings.state_dir, "slack", ttl_seconds=3600, database_url=settings.database_url)

    # ------------------------------------------------------------------ workspace check

    def foreign_request(self, body: dict[str, Any]) -> str | None:
        """Why a request is not for us (wrong workspace or app), or None when it is."""
        team = body.get("team")
        team_id = team.get("id") if isinstance(team, dict) else body.get("team_id")
        if not self.config.team_id:
            return "this gateway has no SIGNOFF_SLACK_TEAM_ID, so it takes no Slack actions; set it to your workspace's team id"
        if team_id != self.config.team_id:
            return f"workspace {team_id} is not the one signoff is configured for"
        if self.config.app_id and body.get("api_app_id") != self.config.app_id:
            return f"app {body.get('api_app_id')} is not the signoff app"
        return None

    # ------------------------------------------------------------------ identity

    async def resolve_identity(self, slack_user_id: str) -> str:
        """The canonical identity (email) for a Slack user; never anything the client sent."""
        email = self.directory.email_for_slack_user(slack_user_id)
        if email is not None:
            return email
        try:
            resp = await self.web.users_info(user=slack_user_id)
        except SlackApiError as e:
            error = e.response.get("error", "unknown error") if e.response is not None else "unknown error"
            raise Refused(f"signoff could not look up your Slack account ({error}); ask an admin to add your Slack user id to the approver directory.") from e
        except SlackClientError as e:
            raise Refused("signoff could not reach Slack to look up your account; try again in a minute.") from e
        user = resp.get("user") or {}
        if user.get("deleted") or user.get("is_bot"):
            raise Refused("bots and deactivated accounts cannot approve releases.")
        if user.get("is_restricted") or user.get("is_ultra_restricted") or user.get("is_stranger"):
            raise Refused("guest and external accounts cannot approve releases; approve from a full member account.")
        if user.get("team_id") != self.config.team_id:
            raise Refused("your Slack account belongs to another workspace; approve from the workspace signoff is installed in.")
        email = (user.get("profile") or {}).get("email")
        if not email:
            raise Refused(
                "your Slack account is not in the approver directory and its email is not visible to signoff; "
                "ask an admin to add your slack_user_id to the approver directory."
            )
        email = str(email).lower()
        person = self.directory.person(email)
        if person is None:
            raise Refused(f"{email} is not in the approver directory; ask an admin to add you before approving.")
        if person.slack_user_id and person.slack_user_id != slack_user_id:
            raise Refused(
                f"the approver directory pins another Slack account for {email}; approve from that account, or ask an admin to update slack_user_id."
            )
        return email

    # ------------------------------------------------------------------ clicks

    async def first_delivery_async(self, key: str) -> bool:
        return await asyncio.to_thread(self.first_delivery, key)

    def first_delivery(self, key: str) -> bool:
        """False for a key seen in the last hour (longer than Slack's 5-minute signature window):
        a Slack retry, a duplicated delivery, or a captured request replayed, restart or not."""
        claimed, _, _ = self.deliveries.claim(key)
        return claimed

    async def open_reject_modal(self, body: dict[str, Any]) -> None:
        ensure_session(self.web)
        action = body["actions"][0]
        target = _parse_value(action.get("value"))
        if target is None:
            await self._ephemeral(body, "This button does not name a release; ask for a fresh approval message.")
            return
        meta = json.dumps(
            {
                **target,
                "channel": (body.get("channel") or {}).get("id"),
                "message_ts": (body.get("container") or {}).get("message_ts") or (body.get("message") or {}).get("ts"),
                "action_ts": action.get("action_ts"),
            },
            separators=(",", ":"),
        )
        try:
            await self.web.views_open(trigger_id=body["trigger_id"], view=reject_modal(meta, release_id=target["release_id"], gate=target["gate"]))
        except SlackClientError as e:
            log.warning("views.open failed: %s", e)
            await self._ephemeral(body, "Slack did not open the reject form; click Reject again.")

    async def handle_click(self, body: dict[str, Any], decision: str) -> ApprovalResult | None:
        ensure_session(self.web)
        action = body["actions"][0]
        user_id = body["user"]["id"]
        if not await self.first_delivery_async(f"{user_id}|{action.get('action_ts')}|{action.get('action_id')}"):
            log.info("dropping a repeated delivery of %s by %s", action.get("action_id"), user_id)
            return None
        target = _parse_value(action.get("value"))
        channel = (body.get("channel") or {}).get("id")
        message_ts = (body.get("container") or {}).get("message_ts") or (body.get("message") or {}).get("ts")
        if target is None:
            await self._ephemeral_to(channel, user_id, "This button does not name a release; ask for a fresh approval message.")
            return None
        return await self.submit(
            user_id=user_id,
            target=target,
            decision=decision,
            reason="",
            channel=channel,
            message_ts=message_ts,
            external_ref=action.get("action_ts"),
        )

    async def handle_reject_submission(self, body: dict[str, Any]) -> ApprovalResult | None:
        ensure_session(self.web)
        view = body["view"]
        user_id = body["user"]["id"]
        if not await self.first_delivery_async(f"{user_id}|{view.get('id')}|{REJECT_MODAL}"):
            return None
        meta = _parse_value(view.get("private_metadata"), extra=("channel", "message_ts", "action_ts"))
        if meta is None:
            log.warning("reject modal without usable private_metadata")
            return None
        reason = (((view.get("state") or {}).get("values") or {}).get("reason") or {}).get("reason", {}).get("value") or ""
        return await self.submit(
            user_id=user_id,
            target=meta,
            decision="reject",
            reason=reason.strip(),
            channel=meta.get("channel"),
            message_ts=meta.get("message_ts"),
            external_ref=meta.get("action_ts") or view.get("id"),
        )

    async def submit(
        self,
        *,
        user_id: str,
        target: dict[str, Any],
        decision: str,
        reason: str,
        channel: str | None,
        message_ts: str | None,
        external_ref: str | None,
    ) -> ApprovalResult | None:
        what = "rejection" if decision == "reject" else "approval"
        release_id = target["release_id"]
        try:
            identity = await self.resolve_identity(user_id)
        except SignoffError as e:
            await self._ephemeral_to(channel, user_id, f"Your {what} of {release_id} was not recorded: {e}")
            return None
        attempt = ApprovalAttempt(
            release_id=release_id,
            gate=target.get("gate"),
            identity=identity,
            channel="slack",
            decision=decision,  # type: ignore[arg-type]
            reason=reason,
            digest=target.get("digest"),
            plan=target.get("plan"),
            external_ref=external_ref,
        )
        try:
            attempt = self.signer.attest_attempt(
                attempt, {"user": user_id, "team": self.config.team_id, "request_id": external_ref, "channel": channel, "message_ts": message_ts}
            )
        except SignoffError as e:
            log.error("cannot attest a Slack %s: %s", what, e)
            await self._ephemeral_to(channel, user_id, f"Your {what} of {release_id} was not recorded: the gateway cannot attest it ({e})")
            return None
        try:
            client = await asyncio.wait_for(self.client_factory(), timeout=self.config.submit_timeout)
            result = await asyncio.wait_for(client.submit_approval(attempt), timeout=self.config.submit_timeout)
        except (asyncio.TimeoutError, TemporalUnreachable):
            await self._ephemeral_to(channel, user_id, TRY_AGAIN.format(what=what, release=release_id))
            return None
        except (NotFound, Refused, SignoffError) as e:
            await self._ephemeral_to(channel, user_id, f"Your {what} of {release_id} was not recorded: {e}")
            return None
        if result.accepted:
            progress = progress_line(result.gate, self._names(result.gate)) if result.gate else ""
            text = f"Your {what} of {release_id} is recorded" + (f": {progress}." if progress else ".")
        else:
            text = f"Your {what} of {release_id} was not counted: {result.reason}"
        await self._ephemeral_to(channel, user_id, text)
        if channel and message_ts:
            await self.refresh_message(client, release_id, target.get("gate"), channel, message_ts)
        return result

    async def refresh_message(self, client: SignoffClient, release_id: str, gate_name: str | None, channel: str, ts: str) -> None:
        """Re-render the approval message from the release's state, so everyone sees the progress.

        The workflow edits the same message from its own ordered outbox. To never leave an older
        view on top of a newer one, the click path re-reads the state after its edit and edits
        again if the gate moved meanwhile (bounded; a closed gate is final, so this converges).
        """
        rendered: tuple[Any, ...] | None = None
        for _ in range(3):
            gate, status = await self._read_gate(client, release_id, gate_name)
            if gate is None or status is None:
                return
            seen = _gate_signature(gate)
            if seen == rendered:
                return
            mention = self.directory.slack_ids(_approvers(self.directory, gate)) if gate.state not in CLOSED_STATES else []
            text, blocks = gate_message(
                status, gate, ui_url=self.settings.ui_url, namespace=self.settings.namespace, names=self._names(gate), mention_ids=mention
            )
            try:
                await self.web.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
            except SlackClientError as e:
                log.warning("chat.update for %s failed: %s", release_id, e)
                return
            rendered = seen

    async def _read_gate(self, client: SignoffClient, release_id: str, gate_name: str | None) -> tuple[GateStatus | None, Any]:
        try:
            status = await asyncio.wait_for(client.status(release_id), timeout=self.config.submit_timeout)
        except (asyncio.TimeoutError, SignoffError) as e:
            log.warning("could not read %s to refresh its Slack message: %s", release_id, e)
            return None, None
        gate = next((g for g in status.gates if g.name == gate_name), None) if gate_name else None
        if gate is None and status.gates:
            gate = status.gates[-1]
        return gate, status

    def _names(self, gate: GateStatus | None) -> dict[str, str]:
        if gate is None:
            return {}
        out: dict[str, str] = {}
        for rec in [*gate.approvals, *gate.rejections]:
            try:
                out[rec.by.lower()] = self.directory.display_name(rec.by)
            except ConfigError:
                pass
        return out

    async def _ephemeral(self, body: dict[str, Any], text: str) -> None:
        await self._ephemeral_to((body.get("channel") or {}).get("id"), body["user"]["id"], text)

    async def _ephemeral_to(self, channel: str | None, user_id: str, text: str) -> None:
        try:
            if channel:
                await self.web.chat_postEphemeral(channel=channel, user=user_id, text=text)
            else:  # a click outside a channel (e.g. from a modal opened elsewhere): DM the person
                await self.web.chat_postMessage(channel=user_id, text=text)
        except SlackClientError as e:
            log.warning("could not answer %s in Slack (%s): %s", user_id, e, text)

    # ------------------------------------------------------------------ slash command

    async def handle_command(self, command: dict[str, Any]) -> str:
        ensure_session(self.web)
        parsed = parse_command(command.get("text", ""))
        sub = self.subcommands.get(parsed.name)
        if sub is None:
            prefix = "" if parsed.name == "help" else f"`{parsed.name}` is not a /signoff subcommand.\n"
            return prefix + help_text(self.subcommands)
        user_id = command.get("user_id", "")
        ctx = CommandContext(
            args=parsed.args,
            text=command.get("text", ""),
            slack_user_id=user_id,
            settings=self.settings,
            directory=self.directory,
            client_factory=self.client_factory,
            resolve_identity=lambda: self.resolve_identity(user_id),
            channel_id=command.get("channel_id", ""),
            web=self.web,
            signer=self.signer,
            team_id=self.config.team_id or "",
        )
        try:
            return await asyncio.wait_for(sub.handler(ctx), timeout=max(self.config.submit_timeout, 5.0))
        except asyncio.TimeoutError:
            return "signoff did not get an answer from Temporal in time; try again in a minute."
        except SignoffError as e:
            return f"`/signoff {parsed.name}` failed: {e}"


def _parse_value(raw: str | None, *, extra: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The button value / modal metadata: {release_id, gate, digest}; None when unusable."""
    try:
        data = json.loads(raw or "")
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("release_id"), str) or not data["release_id"]:
        return None
    digest, plan = data.get("digest"), data.get("plan")
    for value in (digest, plan):
        if value is not None:
            try:
                check_digest(value)
            except ValueError:
                return None
    out = {"release_id": data["release_id"], "gate": data.get("gate") if isinstance(data.get("gate"), str) else None, "digest": digest, "plan": plan}
    for key in extra:
        if isinstance(data.get(key), str):
            out[key] = data[key]
    return out


def _gate_signature(gate: GateStatus) -> tuple[Any, ...]:
    return (gate.state, tuple(a.by for a in gate.approvals), tuple(r.by for r in gate.rejections))


def _approvers(directory: ApproverDirectory, gate: GateStatus) -> list[str]:
    groups = list(dict.fromkeys([*gate.from_groups, *gate.quotas]))
    members: list[str] = []
    for g in groups:
        members.extend(m for m in directory.members(g) if m not in members)
    return members


# ---------------------------------------------------------------------- construction

_STATE: "weakref.WeakKeyDictionary[AsyncApp, SlackApprovals]" = weakref.WeakKeyDictionary()


def build_slack_app(
    client_factory: ClientFactory,
    *,
    settings: Settings,
    directory_path: Path,
    web_client: AsyncWebClient | None = None,
    config: SlackConfig | None = None,
    socket_mode: bool = False,
    subcommands: dict[str, Subcommand] | None = None,
) -> AsyncApp:
    """The Bolt app. `client_factory` should return a shared, connected SignoffClient and raise
    TemporalUnreachable when it cannot connect; it is awaited once per click or command.

    HTTP mode needs SLACK_SIGNING_SECRET; Socket Mode (`socket_mode=True`) needs SLACK_APP_TOKEN
    instead. Both need SLACK_BOT_TOKEN unless a `web_client` is handed in.
    """
    config = config or SlackConfig.from_env()
    if not socket_mode and not config.signing_secret:
        raise ConfigError("SLACK_SIGNING_SECRET is not set; copy the signing secret from your Slack app's Basic Information page.")
    if web_client is None:
        if not config.bot_token:
            raise ConfigError("SLACK_BOT_TOKEN is not set; install the Slack app and set its bot token (xoxb-…).")
        web_client = make_web_client(config)
    # Socket Mode requests are authenticated by the app-level token and never go through the
    # signature check; HTTP requests always do (request_verification_enabled stays True).
    app = AsyncApp(client=web_client, signing_secret=config.signing_secret or "", name="signoff")
    behaviour = SlackApprovals(
        client_factory,
        settings=settings,
        config=config,
        directory=ApproverDirectory(directory_path),
        web_client=web_client,
        subcommands=SUBCOMMANDS if subcommands is None else subcommands,
    )
    _STATE[app] = behaviour

    @app.middleware
    async def only_our_workspace(body: dict[str, Any], next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse:  # noqa: A002
        why = behaviour.foreign_request(body)
        if why is None:
            return await next()
        log.warning("ignored a Slack request: %s", why)
        if body.get("command"):
            return BoltResponse(status=200, body=json.dumps({"response_type": "ephemeral", "text": f"signoff ignored this request: {why}."}), headers={"content-type": "application/json"})
        return BoltResponse(status=200, body="")

    @app.action(APPROVE_ACTION)
    async def on_approve(ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        await behaviour.handle_click(body, "approve")

    @app.action(REJECT_ACTION)
    async def on_reject(ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        await behaviour.open_reject_modal(body)

    @app.view(REJECT_MODAL)
    async def on_reject_reason(ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        await behaviour.handle_reject_submission(body)

    @app.command("/signoff")
    async def on_command(ack: Callable[..., Awaitable[None]], command: dict[str, Any], respond: Callable[..., Awaitable[Any]]) -> None:
        parsed = parse_command(command.get("text", ""))
        if parsed.name not in behaviour.subcommands:
            # help and unknown subcommands answer in the ack itself: no second round trip.
            await ack(response_type="ephemeral", text=await behaviour.handle_command(command))
            return
        await ack()
        await respond(text=await behaviour.handle_command(command), response_type="ephemeral", replace_original=False)

    return app


def slack_behaviour(app: AsyncApp) -> SlackApprovals:
    """The SlackApprovals behind an app built by build_slack_app (tests and benches use it)."""
    return _STATE[app]


def slack_routes(app: AsyncApp, *, path: str = "/slack/events") -> list[Route]:
    """Starlette routes the gateway mounts: POST /slack/events (events, interactivity, commands)."""
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler

    behaviour = _STATE.get(app)
    if behaviour is None or not behaviour.config.signing_secret:
        raise ConfigError("the Slack HTTP endpoint needs SLACK_SIGNING_SECRET; set it or run Slack in Socket Mode with SLACK_APP_TOKEN.")
    handler = AsyncSlackRequestHandler(app)
    verifier = SignatureVerifier(behaviour.config.signing_secret)

    async def events(request: Request) -> Response:
        # What bolt would turn into a 500 (or read without limit) is refused here first: a body
        # over 1 MiB, also when chunked without Content-Length (413, before parsing); a body
        # that is not UTF-8 (400); a missing or non-numeric timestamp header, which slack_sdk's
        # verifier would crash on (401). Everything else goes to bolt, whose signature check
        # stays the authority.
        try:
            body = await read_limited(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            return _refusal(413, f"the body is larger than {MAX_BODY_BYTES} bytes; Slack requests are far smaller")
        except ClientDisconnect:
            return _refusal(400, "the client went away before the body was read")
        timestamp = request.headers.get("x-slack-request-timestamp", "").strip()
        signature = request.headers.get("x-slack-signature", "")
        if not timestamp.isascii() or not timestamp.isdigit() or not signature:
            return _refusal(401, "the request is not signed by Slack (X-Slack-Request-Timestamp and X-Slack-Signature are required)")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _refusal(400, "the body is not UTF-8 text; Slack always sends UTF-8")
        if not verifier.is_valid(text, timestamp, signature):
            return _refusal(401, "the Slack signature does not match (or is older than 5 minutes); check SLACK_SIGNING_SECRET")
        problem = _shape_problem(text, request.headers.get("content-type", ""))
        if problem is not None:
            return _refusal(400, problem)
        response = await handler.handle(_replay(request, body))
        if response.status_code >= 500:
            # bolt's middleware crashed on a signed payload of a shape we did not foresee; the
            # traceback is in the log, the sender gets a 4xx (nothing was submitted).
            log.warning("bolt answered %s to a signed Slack request; refusing it with 400", response.status_code)
            return _refusal(400, "signoff could not read this Slack request")
        return response

    return [Route(path, endpoint=events, methods=["POST"])]


MAX_BODY_BYTES = 1024 * 1024



def _replay(request: Request, body: bytes) -> Request:
    """A Request whose body is `body` (already read), for the bolt adapter to read again."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


_OBJECT_FIELDS = ("event", "user", "team", "channel", "container", "message", "view", "enterprise", "state")
_LIST_OF_OBJECTS = ("actions", "authorizations")


def _shape_problem(text: str, content_type: str) -> str | None:
    """Why a *signed* body does not have the shape of any Slack request, or None.

    bolt reads these fields with `.get` chains before any listener runs, so a JSON `null` or a
    list where Slack always sends an object would crash it; such bodies are answered 400 here.
    """
    from urllib.parse import parse_qs

    if text.lstrip().startswith("{") or "json" in content_type.lower():
        try:
            doc: Any = json.loads(text)
        except ValueError:
            return "the body is neither JSON nor a Slack form post"
    else:
        form = parse_qs(text, keep_blank_values=True)
        if "payload" not in form:
            return None  # a slash command: flat form fields, all strings
        try:
            doc = json.loads(form["payload"][0])
        except ValueError:
            return "the interaction payload is not JSON"
    if not isinstance(doc, dict):
        return "a Slack request body is a JSON object"
    for name in _OBJECT_FIELDS:
        if name in doc and not isinstance(doc[name], dict):
            return f"field {name} of a Slack request is an object"
    for name in _LIST_OF_OBJECTS:
        if name in doc and not (isinstance(doc[name], list) and all(isinstance(x, dict) for x in doc[name])):
            return f"field {name} of a Slack request is a list of objects"
    if doc.get("type") in ("block_actions", "interactive_message") and not (
        doc.get("actions") and all(isinstance(a.get("action_id", a.get("name")), str) for a in doc["actions"])
    ):
        return "a Slack interaction carries at least one action, each naming its action_id"
    if doc.get("type") in ("block_actions", "interactive_message", "view_submission", "view_closed") and not isinstance(
        (doc.get("user") or {}).get("id"), str
    ):
        return "a Slack interaction names the user who acted"
    if doc.get("type") in ("view_submission", "view_closed") and not isinstance((doc.get("view") or {}).get("type"), str):
        return "a view submission names its view and the view's type"
    return None


def _refusal(status: int, reason: str) -> Response:
    return Response(json.dumps({"ok": False, "error": reason}), status_code=status, media_type="application/json")


async def run_socket_mode(app: AsyncApp, *, app_token: str | None = None) -> None:
    """Serve the app over Socket Mode until cancelled (for workspaces without a public URL)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    token = app_token or SlackConfig.from_env().app_token
    if not token:
        raise ConfigError("SLACK_APP_TOKEN is not set; create an app-level token with connections:write for Socket Mode.")
    handler = AsyncSocketModeHandler(app, token)
    try:
        await handler.start_async()
    finally:
        await handler.close_async()
