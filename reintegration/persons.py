"""The person vault: the only place the person's identifying data is kept, encrypted with the
case's data key (``reintegration/crypto.py``). Erasure destroys the key and deletes the row."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from reintegration.crypto import ERASED, Keyring
from reintegration.db import PersonRecord

PURPOSE = "person"


def store_person(session: Session, keyring: Keyring, *, case_id: str, person: dict[str, Any]) -> None:
    """Add the person's record, encrypted, to the session (the caller commits)."""
    payload = keyring.seal(case_id, json.dumps(person, default=str), purpose=PURPOSE)
    session.add(PersonRecord(case_id=case_id, payload=payload, created_at=datetime.now(UTC)))


def load_person(session: Session, keyring: Keyring, *, case_id: str) -> dict[str, Any] | None:
    """The person's data, or None if there is none or it was erased."""
    record = session.get(PersonRecord, case_id)
    if record is None:
        return None
    plain = keyring.open(case_id, record.payload, purpose=PURPOSE)
    return None if plain == ERASED else json.loads(plain)
