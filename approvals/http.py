"""HTTP helpers shared by the channel routes (Slack, Jira)."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The request body passed the route's limit; nothing past the limit was read."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, read in chunks and abandoned as soon as it passes `limit` bytes.

    The gateway's BodyLimit middleware already refuses large bodies; routes check again so
    they stay safe when mounted on their own (tests, other ASGI hosts).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
