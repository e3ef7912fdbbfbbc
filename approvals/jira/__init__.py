"""Jira as an approval channel: the signed webhook route and the pure payload reader.

`jira_routes(...)` is mounted by the gateway (approvals/gateway.py); `attempt_from_webhook` is the
pure function that turns a delivery into an `ApprovalAttempt` or a `Refusal`. The tickets
themselves are created and closed by activities/jira.py.
"""

from approvals.jira.parse import JiraPayloadError, JiraWebhookConfig, Refusal, attempt_from_webhook
from approvals.jira.webhook import jira_routes, signature_for

__all__ = ["JiraPayloadError", "JiraWebhookConfig", "Refusal", "attempt_from_webhook", "jira_routes", "signature_for"]
