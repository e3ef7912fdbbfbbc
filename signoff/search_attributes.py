"""Custom search attributes: `release list --phase X` and `--awaiting EMAIL` are single list queries."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PHASE = SearchAttributeKey.for_keyword("SignoffPhase")
SERVICE = SearchAttributeKey.for_keyword("SignoffService")
REQUESTER = SearchAttributeKey.for_keyword("SignoffRequester")
AWAITING = SearchAttributeKey.for_keyword_list("SignoffAwaiting")
KIND = SearchAttributeKey.for_keyword("SignoffKind")

SEARCH_ATTRIBUTES = [PHASE, SERVICE, REQUESTER, AWAITING, KIND]
