"""The feature flag in front of this build's new code path, read with OpenFeature.

With ``--flags FILE --flag KEY`` the service asks the flag for every request (the request's
sequence number is the targeting key, so flagd's fractional split applies request by request):
``on`` runs the new path (this build's configured behaviour), ``off`` the baseline path. The
flag comes from a flagd flag-definition file through the flagd provider's in-process file
resolver, which re-reads the file when it changes (checked every `POLL_MS`), so a rollback to
0 % reaches requests within a fraction of a second and without a restart.
"""

from __future__ import annotations

import itertools
import threading

POLL_MS = 100


class FlagGate:
    """Answers "does this request take the new path?" from the flag's current definition."""

    def __init__(self, path: str, key: str) -> None:
        from openfeature import api
        from openfeature.contrib.provider.flagd import FlagdProvider
        from openfeature.contrib.provider.flagd.config import ResolverType

        api.set_provider(FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=path, deadline_ms=POLL_MS))
        self.client = api.get_client("checkout")
        self.key = key
        self._sequence = itertools.count()
        self._lock = threading.Lock()

    def new_path(self) -> bool:
        from openfeature.evaluation_context import EvaluationContext

        with self._lock:
            n = next(self._sequence)
        return bool(self.client.get_boolean_value(self.key, False, EvaluationContext(targeting_key=f"request-{n}")))
