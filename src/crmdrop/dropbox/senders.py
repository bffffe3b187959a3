"""Who may send to a dropbox (SPEC §3), and which mail is auto-generated (SPEC §3.4).

Both checks are pure so the SMTP edge can run them cheaply at DATA time and the worker can
run them again authoritatively. Sender authentication (SPF/DKIM/DMARC, SPEC §7.2) is done
elsewhere; a failed verdict there simply means `author` is not passed in as recognized.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crmdrop.dropbox.plan import UserInfo
from crmdrop.mail.addresses import normalize_address
from crmdrop.mail.model import ParsedMessage

__all__ = [
    "SenderVerdict",
    "auto_generated_reason",
    "bulk_reason",
    "check_message_sender",
    "check_sender",
]


@dataclass(frozen=True)
class SenderVerdict:
    """Whether a sender may use a dropbox, the rule that said so, and a sentence why.

    `detail` is written for the sender: it goes into the `550 5.7.1` reply and the
    processing record, so it never lists the owner's addresses.
    """

    allowed: bool
    rule: str  # "recognized_sender" | "reply_all_from_contact" | "not_allowed"
    detail: str


@functools.lru_cache(maxsize=4096)
def _ascii(address: str) -> str:
    """`address` as SMTP reply text may carry it: ASCII only (IDNA domain), at most 100 chars."""
    local, at, domain = address.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = domain.encode("ascii", "backslashreplace").decode("ascii")
    text = local.encode("ascii", "backslashreplace").decode("ascii") + at + domain
    return text if len(text) <= 100 else text[:99] + "~"


def check_sender(
    author: str | None,
    recipients: Sequence[str],
    owner: UserInfo,
    *,
    auth_failure: str | None = None,
) -> SenderVerdict:
    """Apply SPEC §3.1–3.3 to the `From:` address and the `To:`/`Cc:` addresses.

    `auth_failure` names a definite sender-authentication failure of the author's domain
    (e.g. "DMARC fail for acme.com", SPEC §7.2): the owner's address then counts as
    unrecognized, so a forged `From:` cannot use the owner's dropbox. `detail` is ASCII.
    """
    own = {normalize_address(a) for a in owner.addresses}
    if not author or not author.strip():
        return SenderVerdict(
            False,
            "not_allowed",
            "The message has no From address, so its sender cannot be recognized.",
        )
    who = normalize_address(author)
    shown = _ascii(who)
    if who in own:
        if auth_failure is not None:
            return SenderVerdict(
                False,
                "not_allowed",
                f"The message claims to be from {shown} but failed sender authentication "
                f"({_ascii(auth_failure)}).",
            )
        return SenderVerdict(
            True, "recognized_sender", f"{shown} is an address of the dropbox owner."
        )
    addressed_to_owner = any(normalize_address(r) in own for r in recipients)
    if owner.accept_reply_all and addressed_to_owner:
        return SenderVerdict(
            True,
            "reply_all_from_contact",
            f"{shown} replied to all on a message addressed to the dropbox owner.",
        )
    if addressed_to_owner:
        return SenderVerdict(
            False,
            "not_allowed",
            f"{shown} is not a registered address of this dropbox's owner, and the owner "
            "does not accept reply-all messages from contacts.",
        )
    return SenderVerdict(
        False,
        "not_allowed",
        f"{shown} is not a registered address of this dropbox's owner: send from your own "
        "address, or add this one to your account.",
    )


def check_message_sender(
    parsed: ParsedMessage, owner: UserInfo, *, auth_failure: str | None = None
) -> SenderVerdict:
    """`check_sender` on a parsed message: its first From address and its To/Cc addresses."""
    author = next((m.address for m in parsed.from_ if m.address), None)
    recipients = [m.address for m in (*parsed.to, *parsed.cc) if m.address]
    return check_sender(author, recipients, owner, auth_failure=auth_failure)


def _first(headers: Mapping[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    if not values:
        return None
    return values[0].strip()


_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_AUTO_RESPONSE_SUPPRESS = frozenset({"all", "autoreply"})


def bulk_reason(headers: Mapping[str, list[str]]) -> str | None:
    """Why the message is bulk or mailing-list mail by its headers, or None.

    Used by the `automated` address rule: the author of such a message is a sender, not a
    contact. Header names in `headers` are lowercase.
    """
    precedence = _first(headers, "precedence")
    if precedence is not None and precedence.lower() in _BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    list_id = _first(headers, "list-id")
    if list_id is not None:
        return f"List-Id: {list_id}"
    if _first(headers, "list-unsubscribe") is not None:
        return "List-Unsubscribe header present"
    return None


def auto_generated_reason(
    headers: Mapping[str, list[str]], envelope_from: str | None
) -> str | None:
    """Why the message counts as auto-generated (SPEC §3.4), naming the deciding header.

    Auto-generated mail is never answered (RFC 3834), so error replies cannot loop.
    `envelope_from` is the SMTP `MAIL FROM`; None means unknown (e.g. a webhook), while
    ``""`` or ``"<>"`` is the null sender that bounces and auto-replies use.
    """
    if envelope_from is not None and envelope_from.strip().strip("<>").strip() == "":
        return "null envelope sender (MAIL FROM:<>)"
    auto_submitted = _first(headers, "auto-submitted")
    if auto_submitted is not None:
        token = auto_submitted.split(";", 1)[0].strip().lower()
        if token != "no":
            return f"Auto-Submitted: {auto_submitted}"
    for name, label in (
        ("x-autoreply", "X-Autoreply"),
        ("x-autorespond", "X-Autorespond"),
        ("x-autogenerated", "X-AutoGenerated"),
    ):
        value = _first(headers, name)
        if value is not None:
            return f"{label}: {value}" if value else f"{label} header present"
    suppress = _first(headers, "x-auto-response-suppress")
    if suppress is not None:
        tokens = {t.strip().lower() for t in suppress.split(",")}
        if tokens & _AUTO_RESPONSE_SUPPRESS:
            return f"X-Auto-Response-Suppress: {suppress}"
    precedence = _first(headers, "precedence")
    if precedence is not None and precedence.lower() == "auto_reply":
        return f"Precedence: {precedence}"
    content_type = _first(headers, "content-type")
    if content_type is not None and content_type.lower().startswith("multipart/report"):
        return "Content-Type: multipart/report (a delivery or read report)"
    return bulk_reason(headers)
