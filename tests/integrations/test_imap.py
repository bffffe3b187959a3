"""`crmdrop imap` against a real Dovecot (started here on loopback with a throw-away
configuration): mail delivered into the mailbox by Dovecot's LMTP or IMAP APPEND is
queued with the SMTP checks and filed, then moved to the handled folder — refused
mail to the refused folder; a crash between queueing and moving neither loses nor
doubles a message (simulated in-process, and with `crmdrop imap` SIGKILLed for real:
in the window, through a test hook, and at random moments); `serve` runs the poller,
and IDLE picks up new mail at once."""

from __future__ import annotations

import os
import random
import signal
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from imap_tools import MailBox

from crmdrop.config import Settings, load_settings
from crmdrop.integrations.imap import PAUSE_AFTER_QUEUE_ENV, ImapPoller, connect
from crmdrop.receive.intake import Outcome
from crmdrop.receive.service import Receiver
from crmdrop.store.db import Database
from tests.conftest import SERVER_ENV, OwnServer, own_server
from tests.integrations.dovecot_instance import PASSWORD, DovecotInstance
from tests.support import REPO, make_message, wait_for

HANDLED, REFUSED = "crmdrop-handled", "crmdrop-refused"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotInstance]:
    with DovecotInstance() as instance:
        yield instance


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def crm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OwnServer]:
    data_dir: Path = tmp_path_factory.mktemp(f"imap-{request.param}")
    yield from own_server(request.param, data_dir, dict(SERVER_ENV))


@dataclass
class Mailbox:
    """One Dovecot user (every test its own) and the owner whose dropbox it carries."""

    dovecot: DovecotInstance
    user: str
    owner: dict[str, Any]

    @property
    def token(self) -> str:
        return str(self.owner["dropbox"]["note"]).split("@")[0].removeprefix("dropbox-")

    def address(self, suffix: str) -> str:
        """The plus-address of the mailbox: crm-<tag>+<suffix>@company.com."""
        local, domain = self.user.split("@")
        return f"{local}+{suffix}@{domain}"

    def env(self, security: str = "tls") -> dict[str, str]:
        port = self.dovecot.imaps if security == "tls" else self.dovecot.imap
        return {
            "CRMDROP_IMAP_HOST": "127.0.0.1",
            "CRMDROP_IMAP_PORT": str(port),
            "CRMDROP_IMAP_SECURITY": security,
            "CRMDROP_IMAP_CA_FILE": str(self.dovecot.cert),
            "CRMDROP_IMAP_USER": self.user,
            "CRMDROP_IMAP_PASSWORD": PASSWORD,
        }

    def deliver(self, rcpt: str, msg: EmailMessage) -> None:
        """Through Dovecot's LMTP, as an MTA would."""
        with smtplib.LMTP("127.0.0.1", self.dovecot.lmtp, timeout=30) as client:
            assert client.sendmail("sender@partner.example", [rcpt], msg.as_bytes()) == {}

    def client(self) -> MailBox:
        context = ssl.create_default_context(cafile=str(self.dovecot.cert))
        return MailBox("127.0.0.1", self.dovecot.imaps, ssl_context=context).login(
            self.user, PASSWORD
        )

    def folders(self) -> dict[str, list[str]]:
        """The subjects in the inbox and the two folders the poller files into."""
        with self.client() as box:
            result = {}
            for folder in ("INBOX", HANDLED, REFUSED):
                if folder != "INBOX" and not box.folder.exists(folder):
                    result[folder] = []
                    continue
                box.folder.set(folder)
                result[folder] = sorted(m.subject for m in box.fetch(mark_seen=False))
            return result


def new_mailbox(dovecot: DovecotInstance, crm: OwnServer) -> Mailbox:
    tag = uuid.uuid4().hex[:10]
    owner = crm.cli.add_user(f"owner-{tag}@mycorp.example", f"acct-{tag}")
    return Mailbox(dovecot, f"crm-{tag}@company.com", owner)


def poller_settings(crm: OwnServer, box: Mailbox, security: str = "tls") -> Settings:
    """What `crmdrop imap` would read from its environment, for a poller in the test."""
    env = {**crm.cli.env, **box.env(security)}
    return load_settings(**{k.removeprefix("CRMDROP_").lower(): v for k, v in env.items()})


def imap_once(crm: OwnServer, box: Mailbox, security: str = "tls") -> None:
    env = {**os.environ, **crm.cli.env, **box.env(security)}
    done = subprocess.run(
        [sys.executable, "-m", "crmdrop", "imap", "--once"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_imap_queues_by_plus_address_then_moves_each_message(
    dovecot: DovecotInstance, crm: OwnServer
) -> None:
    box = new_mailbox(dovecot, crm)
    email = box.owner["email"]
    case = make_message(from_=email, to=["Pat <pat@partner.example>"], subject="Case by LMTP")
    box.deliver(box.address(f"{box.token}-case"), case)
    note = make_message(
        from_=email,
        to=["quinn@partner.example"],
        subject="Note by APPEND",
        headers={"Delivered-To": box.address(box.token)},
    )
    unknown = make_message(from_=email, to=["x@partner.example"], subject="Unknown dropbox")
    box.deliver(box.address("nosuchtoken0000"), unknown)
    stray = make_message(from_=email, to=["y@partner.example"], subject="No delivery header")
    with box.client() as client:
        client.append(note.as_bytes(), "INBOX")
        client.append(stray.as_bytes(), "INBOX")

    imap_once(crm, box)

    data = crm.cli.export(box.owner["account"])
    assert sorted(n["subject"] for n in data["notes"]) == ["Case by LMTP", "Note by APPEND"]
    assert [c["title"] for c in data["cases"]] == ["Case by LMTP"]
    assert {d["protocol"] for d in data["deliveries"]} == {"imap"}
    assert box.folders() == {
        "INBOX": [],
        HANDLED: ["Case by LMTP", "Note by APPEND"],
        REFUSED: ["No delivery header", "Unknown dropbox"],
    }


def test_a_crash_between_queueing_and_moving_neither_loses_nor_doubles(
    dovecot: DovecotInstance, crm: OwnServer
) -> None:
    box = new_mailbox(dovecot, crm)
    msg = make_message(from_=box.owner["email"], to=["rae@partner.example"], subject="Crash")
    box.deliver(box.address(box.token), msg)
    # The poller's first half alone — queued and committed, not moved — is the state a
    # crash between the two leaves behind.
    settings = poller_settings(crm, box, "starttls")
    db = Database(settings.db_url)
    try:
        poller = ImapPoller(Receiver(db, settings), settings)
        with connect(settings) as mailbox:
            (uid,) = mailbox.uids("ALL")
            first = poller.enqueue(mailbox, uid)
        assert first is not None and first.outcome is Outcome.ACCEPTED
    finally:
        db.dispose()

    imap_once(crm, box, "starttls")  # the restarted poller

    assert box.folders() == {"INBOX": [], HANDLED: ["Crash"], REFUSED: []}

    def settled() -> dict[str, Any] | None:
        data = crm.cli.export(box.owner["account"])
        return data if data["notes"] else None

    data = wait_for(settled, what="the note to be filed")
    assert len(data["deliveries"]) == 1
    assert [n["subject"] for n in data["notes"]] == ["Crash"]


def imap_process(crm: OwnServer, box: Mailbox, **extra: str) -> subprocess.Popen[bytes]:
    """`crmdrop imap` (watching, not --once) as a real process of its own, to be killed."""
    env = {**os.environ, **crm.cli.env, **box.env("tls"), **extra}
    return subprocess.Popen(
        [sys.executable, "-m", "crmdrop", "imap"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: as a crash or the OOM killer
    assert proc.wait(timeout=30) == -signal.SIGKILL


def filed_once_each(crm: OwnServer, box: Mailbox, subjects: list[str]) -> None:
    """Every message filed exactly once, and moved to the handled folder exactly once."""

    def settled() -> dict[str, Any] | None:
        data = crm.cli.export(box.owner["account"])
        return data if len(data["notes"]) >= len(subjects) else None

    data = wait_for(settled, timeout=60, what="every note to be filed")
    time.sleep(0.5)  # a second delivery of one of them would be filed by now too
    data = crm.cli.export(box.owner["account"])
    assert sorted(n["subject"] for n in data["notes"]) == sorted(subjects)
    assert sorted(d["subject"] for d in data["deliveries"]) == sorted(subjects)
    assert box.folders() == {"INBOX": [], HANDLED: sorted(subjects), REFUSED: []}


def test_sigkill_after_the_commit_and_before_the_move_neither_loses_nor_doubles(
    dovecot: DovecotInstance, crm: OwnServer
) -> None:
    """The real thing: `crmdrop imap` is SIGKILLed while it waits (a test hook) between
    committing the queued message and moving it; the restarted poller moves it without
    queueing it again."""
    box = new_mailbox(dovecot, crm)
    msg = make_message(from_=box.owner["email"], to=["rae@partner.example"], subject="Killed")
    box.deliver(box.address(box.token), msg)
    proc = imap_process(crm, box, **{PAUSE_AFTER_QUEUE_ENV: "300"})
    try:
        queued = wait_for(
            lambda: crm.cli.export(box.owner["account"])["deliveries"],
            timeout=60,
            what="the poller to commit the delivery",
        )
        assert proc.poll() is None  # still in the pause: queued and committed, not moved
        assert box.folders()["INBOX"] == ["Killed"]
    finally:
        sigkill(proc)
    assert len(queued) == 1
    assert box.folders() == {"INBOX": ["Killed"], HANDLED: [], REFUSED: []}

    imap_once(crm, box)  # restarted

    filed_once_each(crm, box, ["Killed"])


def test_messages_are_moved_by_the_servers_move_command(
    dovecot: DovecotInstance, crm: OwnServer
) -> None:
    """Dovecot lists MOVE only after login: the poller must see it, or a kill between
    its COPY and its EXPUNGE leaves a message in both folders (then copied twice)."""
    box = new_mailbox(dovecot, crm)
    msg = make_message(from_=box.owner["email"], to=["rui@partner.example"], subject="Moved")
    box.deliver(box.address(box.token), msg)
    settings = poller_settings(crm, box)
    db = Database(settings.db_url)
    try:
        with connect(settings) as mailbox:
            assert "MOVE" in mailbox.client.capabilities
            (uid,) = mailbox.uids("ALL")
            outcome = ImapPoller(Receiver(db, settings), settings).handle(mailbox, uid)
            assert outcome is Outcome.ACCEPTED
    finally:
        db.dispose()
    assert box.folders() == {"INBOX": [], HANDLED: ["Moved"], REFUSED: []}


def test_sigkill_at_random_moments_neither_loses_nor_doubles(
    dovecot: DovecotInstance, crm: OwnServer
) -> None:
    """No hook: `crmdrop imap` is SIGKILLed at random moments of its work, again and
    again, then run to the end; every message is filed once and moved once."""
    box = new_mailbox(dovecot, crm)
    subjects = [f"Random kill {i}" for i in range(5)]
    for subject in subjects:
        msg = make_message(from_=box.owner["email"], to=["ray@partner.example"], subject=subject)
        box.deliver(box.address(box.token), msg)
    seed = random.randrange(1_000_000)
    chance = random.Random(seed)
    print(f"kill times seeded with {seed}")  # shown when the test fails
    for _ in range(8):
        if not box.folders()["INBOX"]:
            break
        proc = imap_process(crm, box)
        try:
            time.sleep(chance.uniform(0.3, 3.0))  # the kill lands wherever the work is
        finally:
            sigkill(proc)
    imap_once(crm, box)
    filed_once_each(crm, box, subjects)


def test_serve_runs_the_poller_and_idle_picks_up_new_mail(
    dovecot: DovecotInstance, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    user = f"crm-{tag}@company.com"
    placeholder = Mailbox(dovecot, user, {})
    env = {
        **SERVER_ENV,
        **placeholder.env("tls"),
        "CRMDROP_IMAP_SERVE": "true",
        "CRMDROP_IMAP_POLL_SECONDS": "600",  # only IDLE can be this quick
    }
    for own in own_server("sqlite", tmp_path, env):
        _idle_brings_in_new_mail(own, dovecot, user, tag)


def _idle_brings_in_new_mail(own: OwnServer, dovecot: DovecotInstance, user: str, tag: str) -> None:
    box = Mailbox(dovecot, user, own.cli.add_user(f"o-{tag}@mycorp.example", f"a-{tag}"))
    wait_for(lambda: f"user=<{user}>" in dovecot.log(), timeout=60, what="the poller to log in")
    time.sleep(1)  # into IDLE
    msg = make_message(from_=box.owner["email"], to=["sol@partner.example"], subject="Idle")
    box.deliver(box.address(box.token), msg)

    def filed() -> bool:
        return bool(own.cli.export(box.owner["account"])["notes"])

    wait_for(filed, timeout=25, what="IDLE to bring the new message in")
    wait_for(lambda: box.folders()[HANDLED] == ["Idle"], what="the message to be moved")
