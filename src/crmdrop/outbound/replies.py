"""Reply messages built from named templates through one function (cf. healthchecks'
`hc/lib/emails.py`). Every reply is marked `Auto-Submitted: auto-replied` (SPEC §6.4)."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).with_name("templates")


def render(name: str, **values: object) -> str:
    text = (TEMPLATES / f"{name}.txt").read_text(encoding="utf-8")
    return Template(text).safe_substitute({k: str(v) for k, v in values.items()})


def build_reply(
    *,
    template: str,
    subject: str,
    sender: str,
    to: str,
    in_reply_to: str | None,
    now: datetime,
    auto_submitted: str = "auto-replied",
    **values: object,
) -> bytes:
    """The bytes of one reply, CRLF line ends, ready for the relay.

    Account mail (a password-reset or invitation link) is `auto-generated`, not a reply.
    """
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"crmdrop <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = auto_submitted
    msg["X-Auto-Response-Suppress"] = "All"
    if auto_submitted == "auto-replied":
        msg["Precedence"] = "auto_reply"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        msg["References"] = f"<{in_reply_to}>"
    msg.set_content(render(template, **values))
    return msg.as_bytes()
