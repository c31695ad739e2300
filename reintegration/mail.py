"""E-mail to people: what a notification says, in its reader's language, and the SMTP server that
sends it.

An e-mail carries the case's reference, what happened (a task's service, a stage, a turn) and a
link into the workspace; never the person's data, a note or anything anyone typed. Each has a
``Message-ID`` made from its notification (or digest) id, the same at every attempt.

The texts are marked with ``N_`` and translated from the workspace's catalogues
(``reintegration/catalogues.py``).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any

from reintegration import catalogues
from reintegration.settings import Settings
from workflows.rules.errors import N_

HEADLINES = {
    "task.assigned": N_("A task was assigned to your agency"),
    "task.declined": N_("A task was declined and needs another agency"),
    "task.undeliverable": N_("A task could not be delivered to its agency"),
    "task.completed": N_("A task was completed"),
    "case.assigned": N_("A case was given to you"),
    "case.reassigned": N_("A case of yours was given to another caseworker"),
    "case.incoming": N_("A person is to arrive in your country: you are named the receiving caseworker"),
    "case.handed-over": N_("A case was handed over on arrival in the country of origin"),
    "case.transferred": N_("A case was transferred to another office"),
    "case.transfer-requested": N_("Another office asks your office to take a case"),
    "case.transfer-refused": N_("The office you asked refused to take the case"),
    "closure.approved": N_("The closure of a case was approved"),
    "closure.rejected": N_("The closure of a case was sent back"),
    "supervision.stalled": N_("A case in your region is stalled"),
    "supervision.escalated": N_("A case in your region is still stalled after twice its deadline"),
}
FACT_LABELS = {
    "service": N_("Service"),
    "agency_id": N_("Agency"),
    "stage": N_("Stage"),
    "item": N_("Overdue"),
    "turn": N_("Whose turn"),
    "due_at": N_("Due"),
    "from_country": N_("From country"),
    "to_country": N_("To country"),
}


class MailRefused(Exception):
    """The mail server refused the message for good (a 5xx answer): no retry will help."""


def _(language: str, message: str) -> str:
    return catalogues.translations(language).gettext(message)


@dataclass(frozen=True)
class Item:
    """One notification as an e-mail shows it."""

    kind: str
    case_reference: str
    link: str
    facts: dict[str, Any]


def link(settings: Settings, role: str, case_id: str, task_id: str | None) -> str:
    """Where the reader acts on it: a partner's task, or the case's page for the staff."""
    base = settings.public_url.rstrip("/")
    if role == "partner":
        return f"{base}/workspace/inbox/{task_id}" if task_id else f"{base}/workspace/inbox"
    return f"{base}/workspace/cases/{case_id}"


def _lines(language: str, item: Item) -> list[str]:
    lines = [_(language, HEADLINES.get(item.kind, item.kind)), "", f"{_(language, N_('Case'))}: {item.case_reference}"]
    for key, label in FACT_LABELS.items():
        if item.facts.get(key) not in (None, ""):
            lines.append(f"{_(language, label)}: {item.facts[key]}")
    lines += ["", f"{_(language, N_('Open'))}: {item.link}"]
    return lines


def _footer(settings: Settings, language: str) -> list[str]:
    return [
        "",
        "-- ",
        _(language, N_("You receive this because of your work in the Reintegration Orchestrator.")),
        _(language, N_("Choose how you are notified: {url}")).format(
            url=settings.public_url.rstrip("/") + "/workspace/notifications"
        ),
    ]


def compose_one(settings: Settings, *, to: str, language: str, message_id: str, item: Item) -> EmailMessage:
    """The e-mail of one notification."""
    subject = f"[{item.case_reference}] {_(language, HEADLINES.get(item.kind, item.kind))}"
    return _message(settings, to, message_id, subject, _lines(language, item) + _footer(settings, language))


def compose_digest(
    settings: Settings, *, to: str, language: str, message_id: str, items: Sequence[Item]
) -> EmailMessage:
    """One e-mail with a day's notifications, oldest first."""
    subject = _(language, N_("Your notifications: {count}")).format(count=len(items))
    body: list[str] = []
    for item in items:
        body += _lines(language, item) + ["", ""]
    return _message(settings, to, message_id, subject, body + _footer(settings, language))


def _message(settings: Settings, to: str, message_id: str, subject: str, lines: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<{message_id}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join(lines) + "\n")
    return message


def send(settings: Settings, message: EmailMessage, taken: Callable[[], None] = lambda: None) -> None:
    """Hand the message to the SMTP server (blocking: run it in a thread); ``taken`` is called the
    moment the server has answered 250 to it, before anything else (not even QUIT): the sender
    records it there, so that the time in which a crash would leave it sent but not recorded (and
    so sent again) is the record's own.

    Raises ``MailRefused`` when the server refuses it for good (5xx), ``OSError`` or
    ``smtplib.SMTPException`` when it should be tried again (down, busy, a 4xx)."""
    assert settings.smtp_host, "no SMTP server is configured"
    context = ssl.create_default_context()
    timeout = settings.smtp_timeout_seconds
    smtp: smtplib.SMTP
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
        if settings.smtp_username:
            password = settings.smtp_password_file.read_text().strip() if settings.smtp_password_file else ""
            smtp.login(settings.smtp_username, password)
        try:
            smtp.send_message(message)
            taken()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(500 <= code < 600 for code in codes):
                raise MailRefused(f"the mail server refused the recipient ({codes[0]})") from None
            raise
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            if 500 <= exc.smtp_code < 600:
                raise MailRefused(f"the mail server refused the message ({exc.smtp_code})") from None
            raise
