"""The journey's refusals: each maps to one HTTP status in the API (api/errors.py)."""

from __future__ import annotations

from workflows.model import Step


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "mark for extraction, translate later"
    """Mark a refusal's English sentence (or a template of one, with ``{name}`` placeholders) for the
    message catalogues; returns it unchanged. The API translates it at its edge (api/languages.py):
    the workflows themselves only ever speak English."""
    return message


class JourneyRuleError(Exception):
    """A command the journey refuses; nothing changes."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StepNotAllowed(JourneyRuleError):
    """The step or task action is not allowed in the case's current state (409), with the steps that
    are. A stage's rule raises it without them; ``rules.steps`` and ``rules.task_actions`` add them."""

    def __init__(self, detail: str, allowed_steps: list[Step] | None = None) -> None:
        super().__init__(detail)
        self.allowed_steps = allowed_steps


class InvalidCommand(JourneyRuleError):
    """The command's content is wrong whatever the state (422)."""


class TaskNotFound(JourneyRuleError):
    """No such task on this case (404)."""


class Forbidden(JourneyRuleError):
    """This caller may never do this (403)."""


class VersionMismatch(JourneyRuleError):
    """The caller's version of the case is stale (412)."""
