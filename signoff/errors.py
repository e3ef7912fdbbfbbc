"""One error hierarchy. Every error a user can cause explains itself in one sentence.

The CLI catches only `SignoffError` and prints `diagnostics()`; everything else is a bug and
keeps its traceback. Third-party errors are wrapped at the boundary with ``raise ... from e``.
"""

from __future__ import annotations


class SignoffError(Exception):
    """Root of every user-facing error. `str(err)` is one sentence: what went wrong, what to do."""

    exit_code: int = 1

    def diagnostics(self) -> str:
        return str(self)


class UsageError(SignoffError):
    """The command line itself was wrong (exit 2)."""

    exit_code = 2


class ReleaseFileError(SignoffError):
    """The release file is missing, not YAML, or does not match the schema."""


class TemporalUnreachable(SignoffError):
    """The Temporal frontend did not answer."""


class NotFound(SignoffError):
    """No release, runbook or record with that id."""


class Refused(SignoffError):
    """The request was understood and refused (not authorised, wrong state)."""


class VerificationError(SignoffError):
    """A signature, bundle or chain did not verify."""


class PolicyError(SignoffError):
    """A policy file could not be loaded or evaluated."""


class ConfigError(SignoffError):
    """A setting is missing or invalid."""
