"""The journey's rules as pure functions: what is allowed now, what a step changes, what is due.

The workflows validate and apply every command with these functions, and the read model shows
their answers (allowed steps, open items), so the API, the history and the view never disagree.
No I/O, no clock and no randomness here: the caller passes ``now`` and an id factory.

Each stage lives in one module, holding its steps (body, why-not, check, apply, example), its
services and its open items with their deadlines; ``registry`` gathers them into the one table
(``STEPS``) everything else reads. Shared machinery: ``steps`` (the case-wide conditions, checking
and recording a step), ``task_actions`` and ``tasks``, ``stall``, ``events``, ``dates``, ``errors``,
``ownership`` and ``view``. This module is their public face.
"""

from __future__ import annotations

from workflows.rules.base import Change, NewId, StepRule
from workflows.rules.dates import add_months, age_on, end_of, start_of
from workflows.rules.errors import (
    Forbidden,
    InvalidCommand,
    JourneyRuleError,
    StepNotAllowed,
    TaskNotFound,
    VersionMismatch,
)
from workflows.rules.identification import new_journey, opened_event
from workflows.rules.ownership import apply_reassign_owner, check_reassign_owner
from workflows.rules.registry import (
    IMMEDIATE_SERVICES,
    STAGE_SERVICES,
    STEPS,
    SUPERVISOR_STEPS,
    allowed_services,
    open_items,
)
from workflows.rules.reintegration import assess_sustainability
from workflows.rules.reopening import REOPEN_STAGES, apply_reopen, check_reopen
from workflows.rules.stall import evaluate_stall, next_deadline, stall_reasons
from workflows.rules.steps import allowed_steps, apply_step, check_step, parse_body, why_not
from workflows.rules.task_actions import agency_needs, apply_task, check_task, service_country
from workflows.rules.tasks import (
    is_overdue,
    last_overdue_day,
    latest_origin_assessment,
    open_tasks,
    reassignable,
    task_overdue,
)
from workflows.rules.view import case_agencies, hands_over, project, project_changes, touched_tasks
from workflows.rules.voluntary_return import ORIGIN_SERVICES

__all__ = [
    "REOPEN_STAGES",
    "apply_reopen",
    "check_reopen",
    "IMMEDIATE_SERVICES",
    "ORIGIN_SERVICES",
    "STAGE_SERVICES",
    "STEPS",
    "SUPERVISOR_STEPS",
    "Change",
    "Forbidden",
    "InvalidCommand",
    "JourneyRuleError",
    "NewId",
    "StepNotAllowed",
    "StepRule",
    "TaskNotFound",
    "VersionMismatch",
    "add_months",
    "age_on",
    "agency_needs",
    "allowed_services",
    "allowed_steps",
    "apply_reassign_owner",
    "apply_step",
    "apply_task",
    "assess_sustainability",
    "case_agencies",
    "check_reassign_owner",
    "check_step",
    "check_task",
    "end_of",
    "evaluate_stall",
    "is_overdue",
    "last_overdue_day",
    "latest_origin_assessment",
    "new_journey",
    "next_deadline",
    "open_items",
    "open_tasks",
    "opened_event",
    "parse_body",
    "hands_over",
    "project",
    "project_changes",
    "reassignable",
    "service_country",
    "stall_reasons",
    "task_overdue",
    "touched_tasks",
    "start_of",
    "why_not",
]
