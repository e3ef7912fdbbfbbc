"""The approver directory as Slack needs it: Slack user id ↔ canonical identity, group members.

The workflow decides who may approve (it re-reads the directory itself); Slack only needs the
directory to (1) turn a clicking Slack user into a canonical email and (2) mention a gate's
approvers by Slack id. Reading is cheap and the file changes rarely, so it is cached by
(mtime, size) and re-read when it changes — someone added to the directory can click at once.

File format (examples/approvers.yaml)::

    people:
      - {email: alice@example.com, name: Alice, slack_user_id: U0ALICE, jira_account_id: ...}
    groups:
      release-managers: [alice@example.com, bob@example.com]
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from signoff.errors import ConfigError
from signoff.models import DirectorySnapshot, Person, check_email


def parse_directory(text: str, *, source: str = "approver directory") -> DirectorySnapshot:
    """Validate the YAML text and return a snapshot keyed by lower-case email."""
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML; fix its syntax.") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping with `people` and `groups`; fix its layout.")
    people: dict[str, Person] = {}
    try:
        for raw in data.get("people") or []:
            person = Person.model_validate(raw)
            email = check_email(person.email)
            people[email] = person.model_copy(update={"email": email})
        groups = {
            str(name): [check_email(str(m)) for m in (members or [])]
            for name, members in (data.get("groups") or {}).items()
        }
    except (ValidationError, ValueError, AttributeError, TypeError) as e:
        raise ConfigError(f"{source} has an invalid person or group entry ({e.__class__.__name__}); check it against examples/approvers.yaml.") from e
    return DirectorySnapshot(sha256=hashlib.sha256(text.encode()).hexdigest(), groups=groups, people=people)


class ApproverDirectory:
    """A directory file, re-read when it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._snapshot: DirectorySnapshot | None = None

    def snapshot(self) -> DirectorySnapshot:
        try:
            stat = self.path.stat()
        except OSError as e:
            raise ConfigError(f"approver directory {self.path} cannot be read; set SIGNOFF_DIRECTORY to the approvers YAML file.") from e
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._snapshot is None or stamp != self._stamp:
                self._snapshot = parse_directory(self.path.read_text(encoding="utf-8"), source=f"approver directory {self.path}")
                self._stamp = stamp
            return self._snapshot

    def email_for_slack_user(self, slack_user_id: str) -> str | None:
        for email, person in self.snapshot().people.items():
            if person.slack_user_id == slack_user_id:
                return email
        return None

    def person(self, email: str) -> Person | None:
        return self.snapshot().people.get(email.lower())

    def members(self, group: str) -> list[str]:
        return list(self.snapshot().groups.get(group, []))

    def slack_ids(self, emails: list[str]) -> list[str]:
        people = self.snapshot().people
        return [p.slack_user_id for e in emails if (p := people.get(e.lower())) is not None and p.slack_user_id]

    def display_name(self, email: str) -> str:
        """Short name for progress lines: the directory name's first word, else the email's local part."""
        person = self.snapshot().people.get(email.lower())
        if person is not None and person.name:
            return person.name.split()[0]
        return email.split("@", 1)[0]
