"""The fault suite's rule for an e-mail the mail server took twice (a pure rule, no stack): allowed
only when a worker was killed in the instant around the server's taking of the first copy (the
message written but not yet read by the server, or taken but not yet recorded as sent: README, "Not
promised"); any other second copy is a defect."""

from __future__ import annotations

import pytest

from tests.faults.harness import (
    KILLED_WHILE_IN_FLIGHT,
    KILLED_WHILE_RECORDING,
    Received,
    copies_told,
    second_copies,
)


def _took(message_id: str, at: float) -> Received:
    return Received(message_id=message_id, to="cw@faults.test", at=at)


def test_a_second_copy_is_explained_only_by_a_kill_in_the_instant_around_the_first() -> None:
    received = [
        _took("<once@faults.test>", 100.0),
        _took("<killed@faults.test>", 200.0),
        _took("<killed@faults.test>", 212.0),  # sent again by the next worker
        _took("<no-kill@faults.test>", 300.0),
        _took("<no-kill@faults.test>", 301.0),
        _took("<kill-before@faults.test>", 400.0),
        _took("<kill-before@faults.test>", 410.0),
        _took("<in-flight@faults.test>", 450.0),  # written, then the kill, then read by the server
        _took("<in-flight@faults.test>", 460.4),
        _took("<kill-too-late@faults.test>", 500.0),
        _took("<kill-too-late@faults.test>", 520.0),
        _took("<kill-after-both@faults.test>", 600.0),  # two live workers sent it, then a kill
        _took("<kill-after-both@faults.test>", 600.5),
        _took("<thrice@faults.test>", 700.0),
        _took("<thrice@faults.test>", 710.0),
        _took("<thrice@faults.test>", 720.0),
    ]
    kills = [200.3, 400.0 - KILLED_WHILE_IN_FLIGHT - 0.01, 449.9935, 500.0 + KILLED_WHILE_RECORDING + 1, 601.0, 700.2]
    explained, unexplained = second_copies(received, kills)
    assert explained == {
        "<killed@faults.test>": pytest.approx(200.3 - 200.0),
        "<in-flight@faults.test>": pytest.approx(449.9935 - 450.0),
    }
    assert sorted(unexplained) == [
        "<kill-after-both@faults.test>",
        "<kill-before@faults.test>",
        "<kill-too-late@faults.test>",
        "<no-kill@faults.test>",
        "<thrice@faults.test>",
    ]
    assert second_copies(received[:1], kills) == ({}, [])


def test_a_failure_tells_the_copies_and_kills_from_the_first_copy_without_the_message_id() -> None:
    received = [_took("<x@faults.test>", 300.0), _took("<x@faults.test>", 310.5)]
    told = copies_told(received, [250.0, 320.25], ["<x@faults.test>"])
    assert told == "copies at +0.000, +10.500 s, kills at -50.000, +20.250 s"
    assert "faults.test" not in told
    assert copies_told(received, [], ["<x@faults.test>"]).endswith("+10.500 s, no kill")
