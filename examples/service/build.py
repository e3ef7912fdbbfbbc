#!/usr/bin/env python3
"""Build the checkout example service as a deterministic zipapp.

    python examples/service/build.py --flavour good|bad --out dist/checkout.pyz

The artifact is ``python ARTIFACT --port N``-runnable. Its behaviour (error rate, latency)
comes from the flavour's configuration, written into the zip as ``checkout/config.json``.
The zip is reproducible: entries in sorted order, fixed timestamps and permissions, no
compression, so the same flavour (and the same sources) always has the same sha256 — which
is what lets a release file or a test name "the good build" by digest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "checkout"

FLAVOURS: dict[str, dict[str, object]] = {
    "good": {"flavour": "good", "version": "1.4.0", "error_rate": 0.0, "latency_ms": 10, "jitter_ms": 4},
    "bad": {"flavour": "bad", "version": "1.5.0", "error_rate": 0.3, "latency_ms": 120, "jitter_ms": 40},
}
SHEBANG = b"#!/usr/bin/env python3\n"
MAIN = "from checkout.server import main\n\nmain()\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.external_attr = 0o644 << 16
    info.create_system = 3  # unix, whatever machine builds it
    info.compress_type = zipfile.ZIP_STORED
    zf.writestr(info, data)


def build_bytes(flavour: str) -> bytes:
    """The artifact's bytes for `flavour` (pure function of the sources and the flavour)."""
    if flavour not in FLAVOURS:
        raise SystemExit(f"unknown flavour {flavour!r}; use one of: {', '.join(sorted(FLAVOURS))}")
    files: dict[str, bytes] = {
        "__main__.py": MAIN.encode(),
        "checkout/config.json": (json.dumps(FLAVOURS[flavour], sort_keys=True, indent=2) + "\n").encode(),
    }
    for source in sorted(PACKAGE.glob("*.py")):
        files[f"checkout/{source.name}"] = source.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(files):
            _entry(zf, name, files[name])
    return SHEBANG + buf.getvalue()


def build(flavour: str, out: Path) -> str:
    """Write the artifact to `out` and return its digest ``sha256:<hex>``."""
    data = build_bytes(flavour)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    digest = build(args.flavour, args.out)
    print(f"built {args.out} ({args.flavour}) {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
