#!/usr/bin/env python3
"""Traffic generator for the local deployment target: ~N requests/s split stable/canary by weight.

    python examples/service/loadgen.py --state .signoff/deploy/checkout.json [--rate 20]

A canary only has metrics if it gets traffic, so the local target runs one of these per service.
It re-reads the target's state file every second (ports and canary weight), and splits requests
deterministically: with weight 20 exactly one request in five goes to the canary, so the canary's
share of traffic is what the release says, not a random approximation. It exits by itself when
the state file has been gone for a few seconds, so a deleted state directory leaves no stray
process behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MAX_IN_FLIGHT = 32
GONE_GRACE_SECONDS = 5.0


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def port_of(state: dict[str, Any], track: str) -> int | None:
    proc = state.get(track)
    if isinstance(proc, dict) and isinstance(proc.get("port"), int):
        return proc["port"]
    return None


class Splitter:
    """Sends `weight` of every 100 requests to the canary, evenly spread."""

    def __init__(self) -> None:
        self.credit = 0

    def pick_canary(self, weight: int) -> bool:
        self.credit += max(0, min(100, weight))
        if self.credit >= 100:
            self.credit -= 100
            return True
        return False


def hit(url: str, in_flight: threading.BoundedSemaphore) -> None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            resp.read()
    except urllib.error.HTTPError as e:  # a 500 is an answer, not a failure of the generator
        e.read()
    except (OSError, ValueError):
        pass
    finally:
        in_flight.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="traffic generator for the local target")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    splitter = Splitter()
    in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
    pool = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT)
    state: dict[str, Any] | None = None
    last_read = 0.0
    last_seen = time.monotonic()
    period = 1.0 / args.rate
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now - last_read >= 1.0:
            last_read = now
            fresh = read_state(args.state)
            if fresh is not None:
                state, last_seen = fresh, now
            elif now - last_seen > GONE_GRACE_SECONDS:
                return 0
        if state is not None:
            stable, canary = port_of(state, "stable"), port_of(state, "canary")
            weight = int(state.get("weight") or 0) if canary else 0
            port = canary if canary and splitter.pick_canary(weight) else stable
            if port is not None and in_flight.acquire(blocking=False):  # drop, don't queue, when overloaded
                pool.submit(hit, f"http://{args.host}:{port}/", in_flight)
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()


if __name__ == "__main__":
    sys.exit(main())
