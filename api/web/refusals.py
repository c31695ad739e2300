"""A refusal in words: what the API answered a page's command (its problem, or the stored answer a
form sent again gets), told to the person with what to do next; and the page's answers after a
change (post/redirect/get) and for a page refused."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from api.deps import IDENTIFIER
from api.errors import ApiProblem
from api.web.case_view import may
from api.web.context import Web
from api.web.forms import new_key


@dataclass
class Refusal:
    """The API's refusal of a command (raised, or replayed for a form sent again)."""

    status: int
    detail: str
    allowed_steps: list[str] = field(default_factory=list)
    # An opening's possible duplicates (``api.cases.PossibleDuplicates``): ``duplicates``, ``elsewhere``.
    found: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def of(cls, problem: ApiProblem) -> Refusal:
        return cls(
            problem.status, problem.detail, list(problem.extra.get("allowed_steps") or []), _found(problem.extra)
        )

    @property
    def duplicates(self) -> bool:
        return "duplicates" in self.found


def _found(extra: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {k: list(extra[k]) for k in ("duplicates", "elsewhere") if isinstance(extra.get(k), list)}


def refusal_in(result: object) -> Refusal | None:
    """The refusal a repeated form's key gave the first time; None for a success."""
    if isinstance(result, JSONResponse) and result.status_code >= 400:
        body = _json(result)
        return Refusal(
            result.status_code, str(body.get("detail", "")), list(body.get("allowed_steps") or []), _found(body)
        )
    return None


def _json(result: JSONResponse) -> dict[str, Any]:
    body = json.loads(bytes(result.body))
    return body if isinstance(body, dict) else {}


@dataclass
class Notice:
    kind: str  # ok, warning, danger
    text: str
    detail: str = ""
    steps: list[str] = field(default_factory=list)  # allowed steps, as links
    conflict: bool = False  # "not possible now": the steps that are are listed
    retry: bool = False


def refused_page(web: Web, status: int) -> HTMLResponse:
    """A page refused (no such case, another role's page, the system unreachable), in words."""
    return web.render("case_refused.html", {"status": status}, status=status)


def see(path: str, **params: str) -> RedirectResponse:
    """After a change: to the page that shows it (post/redirect/get)."""
    return RedirectResponse(path + (f"?{urlencode(params)}" if params else ""), status_code=303)


def form_key(posted: Mapping[str, Any]) -> str:
    """The form's own idempotency key (a fresh one if it came without a usable one)."""
    key = posted.get("idempotency_key")
    return key if isinstance(key, str) and re.fullmatch(IDENTIFIER, key) else new_key()


def explain(web: Web, refusal: Refusal, key: str) -> tuple[Notice, str]:
    """A refusal in words, and the key the form is sent with next: the same one after a failure
    to retry (nothing happened), a new one after a refusal (the old one's answer is stored)."""
    if refusal.status >= 500 or refusal.status == 429:
        text = web._("The system is busy or restarting. Try again in a moment: nothing was lost.")
        return Notice("warning", text, retry=True), key
    if refusal.status == 409:
        return Notice("danger", web._("This is not possible now."), detail=web.detail(refusal.detail)), new_key()
    if refusal.status == 412:
        text = web._("Someone changed this case since you opened the form. Check the case as it is now and send again.")
        return Notice("warning", text), new_key()
    return Notice("danger", web._("This was not accepted."), detail=web.detail(refusal.detail)), new_key()


def not_now(web: Web, allowed: list[str]) -> Notice:
    steps = [s for s in allowed if may(web, s)]
    return Notice("danger", web._("This step is not possible now."), steps=steps, conflict=True)
