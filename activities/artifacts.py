"""A content-addressed artifact store on the local file system.

Promotion and rollback always name an artifact by digest (DESIGN.md, decision 4), so the
build activity files every artifact it produces under its sha256 and the deployment targets
look it up by that digest again. A file stored under a name derived from its own content can
never be swapped for another one later without the name changing, which is what makes
"roll back to sha256:…" mean exactly the bytes that were tested.

Layout: ``<root>/sha256-<hex>`` (the artifact) and ``<root>/sha256-<hex>.intoto.json`` (its
provenance statement, written by the build activity).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from signoff.models import DIGEST_RE

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The lowercase hex sha256 of a file, read in chunks so large artifacts stay cheap."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ArtifactNotFound(LookupError):
    """No artifact with that digest has been stored."""


class ArtifactTampered(ArtifactNotFound):
    """The stored file's bytes no longer hash to its digest: never deploy it."""


class ArtifactStore:
    """Files named by their sha256 under one directory; `put` is idempotent and atomic."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def put(self, path: Path | str) -> str:
        """Copy `path` into the store and return its digest (``sha256:<hex>``).

        The copy goes to a temporary file in the same directory and is renamed into place, so a
        reader never sees a half-written artifact and a crash leaves no corrupt entry behind.
        """
        source = Path(path)
        hexdigest = sha256_file(source)
        digest = f"sha256:{hexdigest}"
        target = self.path_for(digest)
        if target.exists() and sha256_file(target) == hexdigest:
            return digest
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
            if sha256_file(Path(tmp)) != hexdigest:
                raise OSError(f"{source} changed while it was being stored; build it again")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def path_for(self, digest: str) -> Path:
        """Where the artifact with `digest` lives (whether or not it has been stored yet)."""
        if not DIGEST_RE.match(digest):
            raise ValueError(f"{digest!r} is not a digest of the form sha256:<64 lowercase hex characters>")
        return self.root / digest.replace(":", "-", 1)

    def provenance_path_for(self, digest: str) -> Path:
        """Where the in-toto provenance statement for `digest` is written."""
        path = self.path_for(digest)
        return path.with_name(path.name + ".intoto.json")

    def signed_provenance_path_for(self, digest: str) -> Path:
        """Where the DSSE envelope of the signed provenance for `digest` is written."""
        path = self.path_for(digest)
        return path.with_name(path.name + ".intoto.dsse.json")

    def has(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def get(self, digest: str) -> Path:
        """The stored file for `digest`, re-verified: its bytes must still hash to the digest.

        Raises ArtifactNotFound when it was never stored, ArtifactTampered when it was changed
        since (a refusal, never a deploy of other bytes under a trusted name).
        """
        path = self.path_for(digest)
        if not path.is_file():
            raise ArtifactNotFound(f"artifact {digest} is not in the artifact store at {self.root}")
        actual = sha256_file(path)
        if f"sha256:{actual}" != digest:
            raise ArtifactTampered(
                f"the stored artifact {digest} now hashes to sha256:{actual[:12]}…: it was changed after it was stored, so it is not deployed; build it again"
            )
        return path


def store_for(state_dir: Path | str) -> ArtifactStore:
    """The store every signoff component on this machine shares: ``<state_dir>/artifacts``."""
    return ArtifactStore(Path(state_dir) / "artifacts")
