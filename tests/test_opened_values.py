"""Values opened with a case's key and kept beside it (``Keyring.keep_opened``), the summaries kept
by the read model's count of writes (``KeptSummaries``), and the settled heap: what makes a case
read again, the summary and the stalled list cheap (``make bench``), never at the price of serving
something stale or something erased.

On a real SQLite database and key-encryption key; no clock is faked (the key's life is made short).
"""

from __future__ import annotations

import gc
import time
import weakref

import pytest
from sqlmodel import Session, SQLModel, create_engine

from api.supervision import KeptSummaries, Summary
from reintegration import heap
from reintegration.crypto import ERASED, Keyring, LocalKeyEncryptionKey


@pytest.fixture
def keyring(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    SQLModel.metadata.create_all(engine)
    kek = LocalKeyEncryptionKey.from_file(tmp_path / "kek", create=True)
    ring = Keyring(engine, kek, cache_seconds=60, opened_cases=3)
    yield ring
    engine.dispose()


def test_an_opened_value_is_kept_for_its_version_while_the_key_is_at_hand(keyring):
    sealed = keyring.seal("case-1", "a note", purpose="text:notes")
    assert keyring.opened("case-1", "view", 1) is None  # nothing kept yet
    view = {"notes": keyring.open("case-1", sealed, purpose="text:notes")}
    keyring.keep_opened("case-1", "view", 1, view)
    assert keyring.opened("case-1", "view", 1) is view
    assert keyring.opened("case-1", "view", 2) is None  # another version of the case: read again
    assert keyring.opened("case-1", "other", 1) is None
    assert keyring.opened("case-2", "view", 1) is None
    keyring.forget("case-1")  # as the erasure does once committed
    assert keyring.opened("case-1", "view", 1) is None


def test_nothing_is_kept_longer_than_the_key_nor_for_a_case_whose_key_is_not_at_hand(tmp_path, keyring):
    # A case whose key this process never unwrapped (or was destroyed): nothing is kept.
    keyring.keep_opened("case-9", "view", 1, {"notes": "x"})
    assert keyring.opened("case-9", "view", 1) is None

    short = Keyring(keyring.engine, keyring.kek, cache_seconds=0.2)
    sealed = short.seal("case-3", "a note", purpose="text:notes")
    short.keep_opened("case-3", "view", 1, {"notes": short.open("case-3", sealed, purpose="text:notes")})
    assert short.opened("case-3", "view", 1) is not None
    time.sleep(0.3)
    assert short.opened("case-3", "view", 1) is None  # the key's entry expired: so did the value
    short.case_key("case-3")  # unwrapped again: what was opened with the earlier entry stays gone
    assert short.opened("case-3", "view", 1) is None

    # Destroyed in the database (by another process, say): once this entry goes, it opens as erased.
    with Session(short.engine) as session:
        assert short.destroy_case_key(session, "case-3")
        session.commit()
    time.sleep(0.3)
    assert short.open("case-3", sealed, purpose="text:notes") == ERASED
    short.keep_opened("case-3", "view", 2, {"notes": ERASED})
    assert short.opened("case-3", "view", 2) is None


def test_what_expired_with_its_key_leaves_memory_at_the_next_keep_of_any_case(keyring):
    """Not only is it never served (above): the next value kept, for whichever case, lets it go. A
    keep looks through the cases kept only once the earliest of their keys has expired. (Each keep
    below is for a case whose key was just unwrapped; the keys live 2 s.)"""

    class Opened:
        pass

    short = Keyring(keyring.engine, keyring.kek, cache_seconds=2.0)
    early, late = Opened(), Opened()
    short.seal("case-a", "x")
    short.keep_opened("case-a", "view", 1, early)
    time.sleep(1.0)
    short.seal("case-b", "x")
    short.keep_opened("case-b", "view", 1, late)
    refs = weakref.ref(early), weakref.ref(late)
    del early, late
    time.sleep(1.2)  # case-a's key has expired; case-b's has 0.8 s to go
    short.seal("case-c", "x")
    short.keep_opened("case-c", "view", 1, Opened())
    gc.collect()
    assert refs[0]() is None and refs[1]() is not None
    time.sleep(1.0)  # case-b's too, now
    short.seal("case-d", "x")
    short.keep_opened("case-d", "view", 1, Opened())
    gc.collect()
    assert refs[1]() is None


def test_at_most_so_many_cases_are_kept_the_least_recently_used_going_first(keyring):
    for n in range(4):
        keyring.seal(f"case-{n}", "x")
        keyring.keep_opened(f"case-{n}", "view", 1, n)
        if n == 2:
            assert keyring.opened("case-0", "view", 1) == 0  # used: case-1 is now the oldest
    assert keyring.opened("case-1", "view", 1) is None
    assert [keyring.opened(f"case-{n}", "view", 1) for n in (0, 2, 3)] == [0, 2, 3]


def _summary(total: int) -> Summary:
    return Summary(
        total=total,
        by_stage={},
        by_status={},
        by_pathway={},
        by_country={},
        by_agency={},
        median_days_per_stage={},
    )


def test_a_kept_summary_holds_only_at_the_count_it_was_computed_at():
    kept = KeptSummaries(regions=2)
    first = _summary(1)
    kept.keep(["ES", "IT"], 7, first)
    assert kept.get(["IT", "ES"], 7) is first  # the same region, whatever the order
    assert kept.get(["ES", "IT"], 8) is None  # the read model was written since
    assert kept.get(["ES"], 7) is None and kept.get(None, 7) is None
    kept.keep(None, None, _summary(2))  # a database without the count: nothing is kept
    assert kept.get(None, None) is None
    kept.keep(None, 7, _summary(3))
    kept.keep(["FR"], 7, _summary(4))  # a third region: the least recently used goes
    assert kept.get(["ES", "IT"], 7) is None
    assert kept.get(None, 7) is not None and kept.get(["FR"], 7) is not None


def test_the_settled_heap_still_collects_what_is_made_after():
    heap.settle()
    assert gc.get_freeze_count() > 0
    collected = []

    class Cycle:
        def __del__(self) -> None:
            collected.append(True)

    a = Cycle()
    a.me = a  # type: ignore[attr-defined]
    del a
    gc.collect()
    assert collected == [True]
    gc.unfreeze()  # leave the test process as it was
