"""Custom search attributes: `release list --phase X` and `--awaiting EMAIL` are single list queries,
and so are "the in-flight releases of agent X" (suspension) and the trace's agent/model/digest filters."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PHASE = SearchAttributeKey.for_keyword("SignoffPhase")
SERVICE = SearchAttributeKey.for_keyword("SignoffService")
REQUESTER = SearchAttributeKey.for_keyword("SignoffRequester")
AWAITING = SearchAttributeKey.for_keyword_list("SignoffAwaiting")
KIND = SearchAttributeKey.for_keyword("SignoffKind")
AGENT = SearchAttributeKey.for_keyword("SignoffAgent")
MODEL = SearchAttributeKey.for_keyword("SignoffModel")
DIGEST = SearchAttributeKey.for_keyword("SignoffDigest")

SEARCH_ATTRIBUTES = [PHASE, SERVICE, REQUESTER, AWAITING, KIND, AGENT, MODEL, DIGEST]
