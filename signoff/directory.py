"""The approver directory: people, their channel ids, and groups.

Approval counts are sets of canonical ids (emails); Slack user ids and Jira account ids only
ever map *to* a canonical id through this file, never the other way round.
"""

from __future__ import annotations

import hashlib
import threading
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
                self._snapshot = load_directory(self.path)
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
