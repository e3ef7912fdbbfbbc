"""The approver directory: people, their channel ids, and groups.

Approval counts are sets of canonical ids (emails); Slack user ids and Jira account ids only
ever map *to* a canonical id through this file, never the other way round.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from signoff.errors import ConfigError
from signoff.models import DirectorySnapshot, Person, check_email


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    people: list[Person] = Field(default_factory=list)
    groups: dict[str, list[str]] = Field(default_factory=dict)


def load_directory(path: str | Path) -> DirectorySnapshot:
    """Read the directory file; the snapshot carries the file's sha256 so decisions can cite it."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"approver directory {p} cannot be read; set SIGNOFF_DIRECTORY to the approvers YAML file.") from e
    try:
        parsed = _DirectoryFile.model_validate(yaml.safe_load(raw) or {})
    except (yaml.YAMLError, ValidationError) as e:
        raise ConfigError(f"approver directory {p} is not valid ({e.__class__.__name__}); fix it against examples/approvers.yaml.") from e
    people = {check_email(person.email): person.model_copy(update={"email": check_email(person.email)}) for person in parsed.people}
    groups = {name: sorted({check_email(m) for m in members}) for name, members in parsed.groups.items()}
    return DirectorySnapshot(sha256=hashlib.sha256(raw).hexdigest(), groups=groups, people=people)


def email_for_slack_user(snapshot: DirectorySnapshot, slack_user_id: str) -> str | None:
    for email, person in snapshot.people.items():
        if person.slack_user_id and person.slack_user_id == slack_user_id:
            return email
    return None


def email_for_jira_account(snapshot: DirectorySnapshot, account_id: str) -> str | None:
    for email, person in snapshot.people.items():
        if person.jira_account_id and person.jira_account_id == account_id:
            return email
    return None


def slack_ids_for(snapshot: DirectorySnapshot, emails_or_groups: list[str]) -> list[str]:
    """Slack ids of the named people and members of the named groups (for mentions)."""
    emails: set[str] = set()
    for name in emails_or_groups:
        emails.update(snapshot.groups.get(name, [name.lower()] if "@" in name else []))
    return sorted(p.slack_user_id for e in emails if (p := snapshot.people.get(e)) and p.slack_user_id)
