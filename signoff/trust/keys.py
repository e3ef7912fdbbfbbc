"""Keys of principals: ed25519, as PKCS#8/SubjectPublicKeyInfo PEM or OpenSSH files.

People and agents register *public* keys in the approver directory / agent registry (a PEM
block or an OpenSSH ``ssh-ed25519 AAAA… comment`` line); they keep the private half and point
``SIGNOFF_IDENTITY_KEY`` at it. ``cryptography`` reads both formats, so an engineer's existing
OpenSSH key works as it is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signoff.errors import ConfigError


class KeyError_(ConfigError):
    """A key file is missing, unreadable or not an ed25519 key."""


def keyid(public_key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key: the same id `signoff keys init` prints."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def public_openssh(public_key: Ed25519PublicKey, comment: str = "") -> str:
    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")
    return f"{line} {comment}".strip()


_PARSED: dict[str, Ed25519PublicKey] = {}


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A registered public key: a PEM block or an OpenSSH line. Raises ValueError when it is neither.

    Parsed keys are memoised by their text (a pure function of it), so verifying many requests
    against the same registry parses each key once.
    """
    cached = _PARSED.get(text)
    if cached is not None:
        return cached
    key = _parse_public_key(text)
    if len(_PARSED) > 10_000:
        _PARSED.clear()
    _PARSED[text] = key
    return key


def _parse_public_key(text: str) -> Ed25519PublicKey:
    data = text.strip().encode()
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_ssh_public_key(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a PEM or OpenSSH public key ({e})") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("only ed25519 keys are accepted")
    return key


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """A principal's private key (PKCS#8 PEM or OpenSSH), with one-sentence errors."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise KeyError_(f"cannot read the private key {p} ({e.strerror}); point SIGNOFF_IDENTITY_KEY at your key file.") from e
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyError_(f"{p} is not an unencrypted PEM or OpenSSH private key; create one with `signoff keys init --person EMAIL`.") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{p} is not an ed25519 key; signoff principals sign with ed25519 (`ssh-keygen -t ed25519` or `signoff keys init`).")
    return key


def write_new_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write the whole file elsewhere, then put it in place in one step.

    Without ``replace`` the final step is ``link``, which fails if the file exists: two workers
    creating the key at once end up with one key, never a torn or swapped one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_private_key(path: Path, key: Ed25519PrivateKey, *, replace: bool = False) -> None:
    """PKCS#8 PEM at `path` (0600), written whole and put in place in one step; .pub beside it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_new_file(path, pem, 0o600, replace=replace)
    write_new_file(path.with_name(path.name + ".pub"), public_pem(key.public_key()).encode(), 0o644, replace=True)


def ensure_key(path: Path) -> Ed25519PrivateKey:
    """The key at `path`, created (with its .pub) if it does not exist yet."""
    if not path.exists():
        try:
            write_private_key(path, Ed25519PrivateKey.generate())
        except FileExistsError:
            pass  # another process made it meanwhile: use theirs
    return load_private_key(path)
