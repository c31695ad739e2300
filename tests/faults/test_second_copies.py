"""The fault suite's rule for an e-mail the mail server took twice (a pure rule, no stack): allowed
only when a worker was killed in the instant after the server took the first copy, before the
record that it went (README, "Not promised"); any other second copy is a defect."""

from __future__ import annotations

from tests.faults.harness import KILLED_WHILE_RECORDING, Received, second_copies


def _took(message_id: str, at: float) -> Received:
    return Received(message_id=message_id, to="cw@faults.test", at=at)


def test_a_second_copy_is_explained_only_by_a_kill_just_after_the_first() -> None:
    received = [
        _took("<once@faults.test>", 100.0),
        _took("<killed@faults.test>", 200.0),
        _took("<killed@faults.test>", 212.0),  # sent again by the next worker
        _took("<no-kill@faults.test>", 300.0),
        _took("<no-kill@faults.test>", 301.0),
        _took("<kill-before@faults.test>", 400.0),
        _took("<kill-before@faults.test>", 410.0),
        _took("<kill-too-late@faults.test>", 500.0),
        _took("<kill-too-late@faults.test>", 520.0),
        _took("<kill-after-both@faults.test>", 600.0),  # two live workers sent it, then a kill
        _took("<kill-after-both@faults.test>", 600.5),
        _took("<thrice@faults.test>", 700.0),
        _took("<thrice@faults.test>", 710.0),
        _took("<thrice@faults.test>", 720.0),
    ]
    kills = [200.3, 399.0, 500.0 + KILLED_WHILE_RECORDING + 1, 601.0, 700.2]
    explained, unexplained = second_copies(received, kills)
    assert explained == {"<killed@faults.test>": 200.3 - 200.0}
    assert sorted(unexplained) == [
        "<kill-after-both@faults.test>",
        "<kill-before@faults.test>",
        "<kill-too-late@faults.test>",
        "<no-kill@faults.test>",
        "<thrice@faults.test>",
    ]
    assert second_copies(received[:1], kills) == ({}, [])
