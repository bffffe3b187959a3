"""`crmdrop imap`: watch one mailbox and queue what arrives there, like SMTP would.

The dropbox is read from the address the server delivered to (`Delivered-To`,
`X-Original-To`, the envelope headers; the topmost is the server's own), matched
against a pattern — plus-addressing `crm+<token>-case@company.com` or a
catch-all `dropbox-<token>@company.com`. Each message is queued with the same
checks as SMTP and only then moved to the "handled" folder (refused ones to
another, with the reason logged). A crash between the two leaves the message in
the inbox; the next pass finds its intake key already stored with its
deliveries (same transaction), so it is moved without being queued twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import ssl
import threading
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from imap_tools import BaseMailBox, MailBox, MailBoxStartTls, MailBoxUnencrypted

from crmdrop.config import Settings
from crmdrop.dropbox.address import redact
from crmdrop.receive.intake import Intake, Outcome, take
from crmdrop.receive.service import Receiver

log = logging.getLogger(__name__)

# Where the delivering server writes the envelope recipient, most trusted first.
RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "X-Envelope-To", "Envelope-To")
IDLE_SLICE = 20.0  # seconds per IDLE wait: how soon a stop request is noticed
REFUSED_NO_DROPBOX = "no dropbox address in the delivery headers"
# Test hook: seconds to wait after a message is queued (committed) and before it is
# moved, so that tests/integrations/test_imap.py can SIGKILL the process in that window.
PAUSE_AFTER_QUEUE_ENV = "CRMDROP_TEST_IMAP_PAUSE_AFTER_QUEUE"


def _pause_after_queue(uid: str) -> None:
    pause = float(os.environ.get(PAUSE_AFTER_QUEUE_ENV) or 0)
    if pause > 0:
        log.warning("IMAP message %s queued, not moved yet: pausing %gs (test hook)", uid, pause)
        time.sleep(pause)


@dataclass(frozen=True)
class Found:
    """One message read from the mailbox, with what it is to be queued as."""

    uid: str
    raw: bytes
    mail_from: str
    dropbox: str | None  # the dropbox address on our domain, None when none matched


_RECEIVED_FOR = re.compile(r"\bfor\s+<?([^\s<>;]+@[^\s<>;]+)>?", re.IGNORECASE)


def delivery_addresses(raw: bytes) -> list[str]:
    """Where the server says it delivered the message, most trusted first: the envelope
    headers, then the `for <...>` of the topmost `Received` (Dovecot's LMTP writes only that)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    found: list[str] = []
    for name in RECIPIENT_HEADERS:
        found += [a for _, a in getaddresses([str(v) for v in headers.get_all(name, [])]) if a]
    received = headers.get_all("Received", [])
    if received:
        found += _RECEIVED_FOR.findall(" ".join(str(received[0]).split()))
    return found


def dropbox_for(raw: bytes, pattern: re.Pattern[str], domain: str) -> str | None:
    """The dropbox address the mailbox address in the delivery headers stands for."""
    for address in delivery_addresses(raw):
        match = pattern.search(address.strip().lower())
        if match is not None:
            kind = match.groupdict().get("kind")
            suffix = f"-{kind}" if kind else ""
            return f"dropbox-{match.group('token')}{suffix}@{domain}"
    return None


def _return_path(raw: bytes) -> str:
    value = BytesHeaderParser(policy=compat32).parsebytes(raw).get("Return-Path", "")
    return getaddresses([str(value)])[0][1] if value else ""


def connect(settings: Settings) -> BaseMailBox:
    """A logged-in connection to the watched folder (TLS, STARTTLS or, for tests, plain)."""
    if not settings.imap_host or not settings.imap_user:
        raise ValueError("set CRMDROP_IMAP_HOST, CRMDROP_IMAP_USER and CRMDROP_IMAP_PASSWORD")
    context = ssl.create_default_context(cafile=settings.imap_ca_file)
    mailbox: BaseMailBox
    if settings.imap_security == "tls":
        mailbox = MailBox(settings.imap_host, settings.imap_port or 993, ssl_context=context)
    elif settings.imap_security == "starttls":
        port = settings.imap_port or 143
        mailbox = MailBoxStartTls(settings.imap_host, port, ssl_context=context)
    else:
        mailbox = MailBoxUnencrypted(settings.imap_host, settings.imap_port or 143)
    mailbox.login(settings.imap_user, settings.imap_password or "", settings.imap_folder)
    _refresh_capabilities(mailbox)
    for folder in (settings.imap_handled_folder, settings.imap_refused_folder):
        if not mailbox.folder.exists(folder):
            mailbox.folder.create(folder)
    return mailbox


def _refresh_capabilities(mailbox: BaseMailBox) -> None:
    """Ask the server again what it can do, now that we are logged in.

    imaplib keeps the capabilities the server listed before LOGIN, and servers list more
    after it: Dovecot, for one, names MOVE only then. Without MOVE, imap_tools moves a
    message by COPY, then delete and EXPUNGE, and a process killed between the two
    leaves the message in both folders — the next pass copies it once more (a duplicate
    in the handled folder). With MOVE the server moves it in one command.
    """
    status, data = mailbox.client.capability()
    listed = data[-1] if status == "OK" and data else None
    if isinstance(listed, bytes):
        mailbox.client.capabilities = tuple(listed.decode("ascii", "replace").upper().split())


class ImapPoller:
    """Queues what is in the watched folder, then files it away."""

    def __init__(self, receiver: Receiver, settings: Settings) -> None:
        self.receiver = receiver
        self.settings = settings
        self.pattern = re.compile(settings.imap_address_pattern)
        self.source = f"{settings.imap_user}@{settings.imap_host}/{settings.imap_folder}"

    def read(self, mailbox: BaseMailBox, uid: str) -> Found:
        """The exact bytes of message `uid` (PEEK: the \\Seen flag is left alone)."""
        typ, data = mailbox.client.uid("FETCH", uid, "(BODY.PEEK[])")
        parts = [p for p in data if isinstance(p, tuple)]
        if typ != "OK" or not parts:
            raise OSError(f"could not fetch message {uid}: {typ}")
        raw = bytes(parts[0][1])
        domain = self.settings.domain
        return Found(uid, raw, _return_path(raw), dropbox_for(raw, self.pattern, domain))

    def key(self, mailbox: BaseMailBox, uid: str) -> tuple[str, str]:
        """The message's identity in this mailbox: folder, UIDVALIDITY and UID."""
        status = mailbox.folder.status(self.settings.imap_folder, ["UIDVALIDITY"])
        identity = f"{self.source}/{status['UIDVALIDITY']}/{uid}"
        return "imap", hashlib.sha256(identity.encode()).hexdigest()

    def enqueue(self, mailbox: BaseMailBox, uid: str) -> Intake | None:
        """Queue message `uid`; None when no dropbox address could be read from it."""
        found = self.read(mailbox, uid)
        if found.dropbox is None:
            return None
        return take(
            self.receiver,
            mail_from=found.mail_from,
            rcpts=[found.dropbox],
            raw=found.raw,
            protocol="imap",
            peer=self.settings.imap_host or "",
            key=self.key(mailbox, uid),
        )

    def handle(self, mailbox: BaseMailBox, uid: str) -> Outcome:
        """Queue, then move: handled, refused (reason logged), or left for the next pass."""
        intake = self.enqueue(mailbox, uid)
        if intake is None:
            log.warning("IMAP message %s refused: %s", uid, REFUSED_NO_DROPBOX)
            mailbox.move(uid, self.settings.imap_refused_folder)
            return Outcome.REFUSED
        if intake.outcome is Outcome.TEMPORARY:
            log.warning("IMAP message %s left for later: %s", uid, intake.detail)
        elif intake.outcome is Outcome.REFUSED:
            log.warning("IMAP message %s refused: %s", uid, redact(intake.detail))
            mailbox.move(uid, self.settings.imap_refused_folder)
        else:
            _pause_after_queue(uid)
            mailbox.move(uid, self.settings.imap_handled_folder)
        return intake.outcome

    def drain(self, mailbox: BaseMailBox) -> int:
        """Handle every message in the folder; how many were moved."""
        moved = 0
        for uid in mailbox.uids("ALL"):
            if self.handle(mailbox, uid) is not Outcome.TEMPORARY:
                moved += 1
        return moved

    def wait(self, mailbox: BaseMailBox, stop: threading.Event) -> None:
        """Until something may have arrived: IDLE when the server has it, else a poll."""
        deadline = time.monotonic() + self.settings.imap_poll_seconds
        idle = self.settings.imap_idle and "IDLE" in mailbox.client.capabilities
        while not stop.is_set() and time.monotonic() < deadline:
            if idle:
                if mailbox.idle.wait(timeout=min(IDLE_SLICE, self.settings.imap_poll_seconds)):
                    return
            else:
                stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))


def run(receiver: Receiver, settings: Settings, stop: threading.Event, *, once: bool) -> None:
    """Watch the mailbox until `stop` (reconnecting after errors); `once`: one pass."""
    poller = ImapPoller(receiver, settings)
    delay = 1.0
    while not stop.is_set():
        try:
            with connect(settings) as mailbox:
                delay = 1.0
                while not stop.is_set():
                    poller.drain(mailbox)
                    if once:
                        return
                    poller.wait(mailbox, stop)
        except Exception as error:
            if once:
                raise
            log.warning("IMAP: %s; reconnecting in %gs", error, delay)
            stop.wait(delay)
            delay = min(delay * 2, 300.0)


def watch(receiver: Receiver, settings: Settings, *, once: bool, parent: int | None) -> None:
    """`crmdrop imap`: run until SIGTERM/SIGINT, or until `parent` (serve) is gone."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def orphaned() -> None:
        while not stop.wait(0.5):
            if parent is not None and os.getppid() != parent:
                log.warning("serve is gone; the IMAP poller stops")
                stop.set()

    threading.Thread(target=orphaned, name="crmdrop-imap-parent", daemon=True).start()
    try:
        run(receiver, settings, stop, once=once)
    finally:
        stop.set()
