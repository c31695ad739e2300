"""The person vault: the only place the person's identifying data is kept.

The payload is stored as one serialised document per case so that the confidentiality work can
encrypt it with a per-case key (and erase it by destroying that key) without touching callers.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlmodel import Session

from reintegration.db import PersonRecord


def store_person(session: Session, *, case_id: str, person: dict[str, Any]) -> None:
    """Add the person's record to the session (the caller commits)."""
    session.add(
        PersonRecord(case_id=case_id, payload=json.dumps(person, default=str), created_at=datetime.now(timezone.utc))
    )


def load_person(session: Session, *, case_id: str) -> dict[str, Any] | None:
    record = session.get(PersonRecord, case_id)
    return json.loads(record.payload) if record else None
