"""The `email` job: sends {to, subject, body} over SMTP, or writes it to an outbox folder.

With CONVEYOR_SMTP_URL set the message really goes to that server (smtp:// or smtps://, with
optional user:password); with none, it becomes an .eml file in CONVEYOR_OUTBOX_DIR.
"""

from __future__ import annotations

import logging
import re
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

from ..config import Config
from ..model import Envelope
from .base import FieldError, Handler, JobFailed, Registry

log = logging.getLogger(__name__)

ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+")
SENDER = "conveyor@localhost"


def validate(payload: dict[str, Any]) -> list[FieldError]:
    errors = []
    to = payload.get("to")
    recipients = to if isinstance(to, list) else [to]
    if not recipients or len(recipients) > 50:
        errors.append(FieldError("to", "must be an address or a list of 1-50 addresses"))
    elif not all(isinstance(r, str) and ADDRESS.fullmatch(r) for r in recipients):
        errors.append(FieldError("to", "must be a valid email address (or a list of them)"))
    subject = payload.get("subject")
    # one line as Python's email package counts lines (str.splitlines: \v, \f, \x1c-\x1e, \x85,
    # U+2028 and U+2029 too), or building the message raises when the job runs
    if not isinstance(subject, str) or not 1 <= len(subject) <= 998 or subject.splitlines() != [subject]:
        errors.append(FieldError("subject", "must be a single-line string of 1-998 characters"))
    if not isinstance(payload.get("body"), str):
        errors.append(FieldError("body", "must be a string"))
    return errors


def build_message(job: Envelope, payload: dict[str, Any]) -> EmailMessage:
    msg = EmailMessage()
    to = payload["to"]
    msg["From"] = SENDER
    msg["To"] = ", ".join(to) if isinstance(to, list) else to
    msg["Subject"] = payload["subject"]
    msg["X-Conveyor-Job"] = f"{job.id}/{job.attempt}"
    msg.set_content(payload["body"])
    return msg


def send_smtp(url: str, msg: EmailMessage, timeout: float) -> None:
    parts = urlsplit(url)
    cls = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    port = parts.port or (465 if parts.scheme == "smtps" else 25)
    with cls(parts.hostname or "localhost", port, timeout=timeout) as smtp:
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        smtp.send_message(msg)


def register(registry: Registry, config: Config) -> None:
    outbox = Path(config.outbox_dir)

    async def run(job: Envelope, payload: dict[str, Any]) -> Any:
        msg = build_message(job, payload)
        if config.smtp_url:
            try:
                # abandoned on timeout: the attempt ends at its deadline, the socket at its own
                await trio.to_thread.run_sync(
                    send_smtp, config.smtp_url, msg, 30.0, abandon_on_cancel=True
                )
            except (OSError, smtplib.SMTPException) as exc:
                raise JobFailed(f"SMTP delivery failed: {exc}") from exc
            return {"delivered": "smtp", "to": msg["To"]}

        path = outbox / f"{job.id}-{job.attempt}.eml"

        def write() -> None:
            outbox.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(msg))

        await trio.to_thread.run_sync(write)
        log.info("email job %s written to %s (no CONVEYOR_SMTP_URL set)", job.id, path)
        return {"delivered": "outbox", "path": str(path), "to": msg["To"]}

    registry.register(Handler("email", validate, run, default_timeout_ms=lambda p: 60_000))
