"""Every stored history of a real journey replays against today's workflow code.

The histories under ``tests/histories/<release>/`` were recorded by ``python -m tests.histories.record``
with the code of that release: cases in flight when the next version deployed. A change to the
workflows that would break one of them fails here, not in production (see "Changing the journey"
in the README: ``workflow.patched``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from reintegration.codec import data_converter
from reintegration.crypto import DataKeyRecord, Keyring, LocalKeyEncryptionKey
from reintegration.db import make_engine
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings
from tests.histories.record import UNSETTLED
from workflows.case import CaseWorkflow
from workflows.delivery import (
    SupervisorNotificationWorkflow,
    TaskDeliveryWorkflow,
    WebhookVerificationWorkflow,
)
from workflows.journey import JourneyWorkflowBase
from workflows.stages import ALL_WORKFLOWS

HISTORIES = Path(__file__).resolve().parent / "histories"
RELEASES = sorted(p for p in HISTORIES.iterdir() if (p / "keys.json").exists())
WORKFLOWS = [
    CaseWorkflow,
    *ALL_WORKFLOWS,
    TaskDeliveryWorkflow,
    SupervisorNotificationWorkflow,
    WebhookVerificationWorkflow,
]


@pytest.fixture(scope="module", params=RELEASES, ids=[r.name for r in RELEASES])
def release(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Keyring]]:
    """A release's histories, and a keyring holding their cases' data keys (wrapped by the test key)."""
    folder: Path = request.param
    with _keyring(folder, tmp_path_factory.mktemp(f"replay-{folder.name}")) as keyring:
        yield folder, keyring


@contextmanager
def _keyring(folder: Path, data_dir: Path) -> Iterator[Keyring]:
    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings)
    upgrade_schema(engine)
    stored = json.loads((folder / "keys.json").read_text())
    with Session(engine) as session:
        for key_id, key in stored["keys"].items():
            session.add(DataKeyRecord(key_id=key_id, created_at=datetime.now(UTC), **key))
        session.commit()
    keyring = Keyring(engine, LocalKeyEncryptionKey.from_file(HISTORIES / "test-kek"))
    try:
        yield keyring
    finally:
        keyring.dispose()
        engine.dispose()


def test_the_recorded_journeys_are_all_there():
    assert RELEASES, "no stored histories"
    newest = RELEASES[-1]
    journeys = {p.name for p in newest.iterdir() if p.is_dir()}
    assert {
        "residence-to-closure",
        "return-to-closure",
        "pathway-switch",
        "appeal",
        "withdrawal",
        "continued-as-new",
        "revision-after-a-later-visit",
        "reopened-in-reintegration",
        "reopened-in-protection",
        "transferred",
        "monitored-with-survey",
    } | {
        f"stopped-in-{s}" for s in ("identification", "protection", "pathway", "return", "residence", "reintegration")
    } <= journeys
    runs = [p.name for p in (newest / "continued-as-new").glob("case.*.json")]
    assert len(runs) > 1, "the continued-as-new journey has one run of its case workflow"


async def test_every_stored_history_replays_with_todays_code(release):
    folder, keyring = release
    # In the sandbox (the worker runs outside it by default): whatever non-deterministic the code
    # calls on a recorded path fails here.
    replayer = Replayer(
        workflows=WORKFLOWS, data_converter=data_converter(keyring), workflow_runner=SandboxedWorkflowRunner()
    )
    replayed = 0
    for path in sorted(folder.glob("*/*.json")):
        history = WorkflowHistory.from_json(_workflow_id(path, folder), path.read_text())
        # A history cut before or within a workflow task would make the replay wait forever.
        types = [e.event_type for e in history.events]
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in types and types[-1] not in UNSETTLED, path
        await replayer.replay_workflow(history)  # raises on any non-determinism
        replayed += 1
    assert replayed >= 12
    print(f"\n{folder.name}: {replayed} workflow runs replayed")


async def test_the_journey_recorded_before_the_revision_deadline_patch_needs_it(monkeypatch, tmp_path):
    """Replayed as if the patch were not asked (the new deadline in every run), the reintegration
    stage recorded before it fails: a timer there found the revision overdue again (its deadline moved
    by the later visit) and projected it, which the new rule does not. So the stored histories do
    test the patch's guard."""

    def follow_the_new_rule(self: JourneyWorkflowBase) -> None:
        self.state.revision_due_from_flagging_visit = True

    monkeypatch.setattr(JourneyWorkflowBase, "follow_patches", follow_the_new_rule)
    folder = HISTORIES / "2026-12-06-before-revision-deadline"
    [path] = (folder / "revision-after-a-later-visit").glob("case-reintegration-*.json")
    with _keyring(folder, tmp_path) as keyring:
        replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(keyring))
        with pytest.raises(NondeterminismError, match="ActivityTaskScheduled"):
            await replayer.replay_workflow(WorkflowHistory.from_json(_workflow_id(path, folder), path.read_text()))


def _workflow_id(path: Path, folder: Path) -> str:
    cases = json.loads((folder / "keys.json").read_text())["cases"]
    short = path.name.split(".", 1)[0]
    return short.replace("case", f"case-{cases[path.parent.name]}", 1)
