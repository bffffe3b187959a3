"""Test support: real servers and real databases, nothing mocked.

- `pg_database()` makes a fresh PostgreSQL database (dropped afterwards);
- `Relay` is a real SMTP server (aiosmtpd) that keeps what it is sent;
- `ServerProcess` runs `crmdrop serve` as a subprocess on free ports;
- `Cli` runs `crmdrop` commands in-process against the same database.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import psycopg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from typer.testing import CliRunner

from crmdrop.cli import app
from crmdrop.config import Settings
from crmdrop.receive.service import Rcpt, Receiver
from crmdrop.store import accounts
from crmdrop.store.db import Database

PG_URL = os.environ.get("CRMDROP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[1]
DOMAIN = "dropbox.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; its URL. Fails (never skips) without PostgreSQL."""
    name = f"crmdrop_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated_with_owner(url: str) -> dict[str, int]:
    """Migrate the (new) database at `url` and add one user, o@x.example of account
    "acme", as SQL-level tests need one: `{"account": its id, "user": its id}`."""
    db = Database(url)
    try:
        db.migrate()
        with db.writing() as session:
            user = accounts.add_user(session, "o@x.example", name="O", account="acme")
            return {"account": user.account_id, "user": user.id}
    finally:
        db.dispose()


def receiver_with_owner(db: Database, settings: Settings) -> tuple[Receiver, Rcpt]:
    """Migrate `db`, add u@mycorp.example (account "acme"), and return a `Receiver` on it
    with that user's note dropbox as a recipient, as the accept path's tests need."""
    db.migrate()
    with db.writing() as session:
        user = accounts.add_user(session, "u@mycorp.example", name="U", account="acme")
        box = f"dropbox-{user.token}@{settings.domain}"
    receiver = Receiver(db, settings)
    rcpt = receiver.check_recipient(box)[1]
    assert rcpt is not None
    return receiver, rcpt


@dataclass
class Relayed:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


class _RelayHandler:
    def __init__(self) -> None:
        self.messages: list[Relayed] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.messages.append(
            Relayed(envelope.mail_from or "", list(envelope.rcpt_tos), bytes(content))
        )
        return "250 OK"


class Relay:
    """A real SMTP server on loopback standing in for the outgoing relay."""

    def __init__(self) -> None:
        self.handler = _RelayHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def messages_to(self, rcpt: str) -> list[Relayed]:
        return [m for m in self.handler.messages if rcpt in m.rcpt_tos]

    def __enter__(self) -> Relay:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@dataclass
class Cli:
    """`crmdrop` commands, run in-process with the server's database settings."""

    env: dict[str, str]
    runner: CliRunner = field(default_factory=CliRunner)

    def run(self, *args: str, ok: bool = True) -> str:
        result = self.runner.invoke(app, list(args), env=self.env, catch_exceptions=False)
        if ok and result.exit_code != 0:
            raise AssertionError(f"crmdrop {' '.join(args)} → {result.exit_code}: {result.output}")
        return result.output

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args))

    def export(self, account: str) -> dict[str, Any]:
        data: dict[str, Any] = self.json("export", account)
        return data

    def add_user(
        self, email: str, account: str, *, name: str = "Owner", timezone: str = "UTC"
    ) -> dict[str, Any]:
        data: dict[str, Any] = self.json(
            "users",
            "add",
            email,
            "--name",
            name,
            "--account",
            account,
            "--timezone",
            timezone,
            "--json",
        )
        return data


class ServerProcess:
    """`crmdrop serve` in a subprocess, as a user would run it."""

    def __init__(self, data_dir: Path, env: dict[str, str], *args: str, demo: bool = False) -> None:
        self.args = args  # more `crmdrop serve` flags
        self.demo = demo
        self.data_dir = data_dir
        self.smtp_port = free_port()
        self.lmtp_port = free_port()
        self.http_port = free_port()
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "serve.log"

    def start(self, *, worker: bool = True) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crmdrop",
                "serve",
                *([] if self.demo else ["--no-demo"]),
                "--data",
                str(self.data_dir),
                "--smtp",
                f"127.0.0.1:{self.smtp_port}",
                "--lmtp",
                f"127.0.0.1:{self.lmtp_port}",
                "--http",
                f"127.0.0.1:{self.http_port}",
                *self.args,
                *([] if worker else ["--no-worker"]),
            ],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"crmdrop serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=1):
                    pass
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            if not worker or self._worker_up(offset):
                return
            time.sleep(0.1)
        raise RuntimeError(f"crmdrop serve did not start: {self.log_path.read_text()[-3000:]}")

    def _worker_up(self, offset: int) -> bool:
        """Whether this start's worker process logged that it runs (a loaded machine may
        take many seconds to start it; a test must not count that against filing)."""
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return b"the worker is up" in f.read()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown of anything."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def make_message(
    *,
    from_: str,
    to: list[str],
    subject: str = "Hello",
    body: str = "Hi there.\n",
    cc: list[str] | None = None,
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
    attachments: list[tuple[str, bytes]] | None = None,
) -> EmailMessage:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = from_
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime_now())
    msg["Message-ID"] = message_id or make_msgid(domain="test.example")
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    for name, data in attachments or []:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg


def datetime_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def smtp_send(
    port: int, mail_from: str, rcpts: list[str], data: bytes | EmailMessage, *, lmtp: bool = False
) -> dict[str, tuple[int, bytes]]:
    """Send one message; the refused recipients (smtplib's return), raising on a refused DATA."""
    raw = data.as_bytes() if isinstance(data, EmailMessage) else data
    client_cls: type[smtplib.SMTP] = smtplib.LMTP if lmtp else smtplib.SMTP
    with client_cls("127.0.0.1", port, timeout=30) as client:
        result: dict[str, tuple[int, bytes]] = client.sendmail(mail_from, rcpts, raw)
        return result


def wait_for(check: Callable[[], Any], *, timeout: float = 20, what: str = "condition") -> Any:
    """Poll until `check()` returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lmtp_session(port: int, mail_from: str, rcpts: list[str], raw: bytes) -> dict[str, Any]:
    """A raw LMTP dialogue: the reply to each RCPT and the per-recipient replies to DATA.

    (smtplib.LMTP reads a single DATA reply; LMTP sends one per accepted recipient.)
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")

        def reply() -> str:
            lines = []
            while True:
                line = reader.readline().decode().rstrip("\r\n")
                lines.append(line)
                if len(line) < 4 or line[3] != "-":
                    return "\n".join(lines)

        def cmd(text: str) -> str:
            sock.sendall(text.encode() + b"\r\n")
            return reply()

        assert reply().startswith("220")
        assert cmd("LHLO tests.example").startswith("250")
        assert cmd(f"MAIL FROM:<{mail_from}>").startswith("250")
        rcpt_replies = {r: cmd(f"RCPT TO:<{r}>") for r in rcpts}
        accepted = [r for r, line in rcpt_replies.items() if line.startswith("250")]
        data_replies: list[str] = []
        if accepted:
            assert cmd("DATA").startswith("354")
            body = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            body = b"\r\n".join(
                b"." + ln if ln.startswith(b".") else ln for ln in body.split(b"\r\n")
            )
            sock.sendall(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
            data_replies = [reply() for _ in accepted]
        cmd("QUIT")
        return {"rcpt": rcpt_replies, "data": dict(zip(accepted, data_replies, strict=True))}


class DnsServer:
    """A real DNS server on loopback (UDP) answering TXT queries from `records`.

    Names in `silent` get no answer at all (the resolver times out); every other
    name that is not in `records` is NXDOMAIN.
    """

    def __init__(self, records: dict[str, list[str]], silent: set[str] | None = None) -> None:
        self.records = {k.lower().rstrip("."): v for k, v in records.items()}
        self.silent = {s.lower().rstrip(".") for s in silent or set()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset

        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            question = query.question[0]
            name = question.name.to_text().lower().rstrip(".")
            if name in self.silent:
                continue
            response = dns.message.make_response(query)
            texts = self.records.get(name) if question.rdtype == dns.rdatatype.TXT else None
            if texts:
                quoted = [
                    " ".join(f'"{t[i : i + 255]}"' for i in range(0, len(t), 255)) for t in texts
                ]
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 60, "IN", "TXT", quoted)
                )
            elif name not in self.records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@dataclass
class Received:
    """One HTTP request a `WebhookReceiver` got."""

    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A real HTTP server on loopback that records what is POSTed to it.

    `statuses` are answered in turn (then 200): `[500, 500]` fails twice, then accepts.
    `always` answers every request with that status instead.
    """

    def __init__(self, statuses: list[int] | None = None, always: int | None = None) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[Received] = []
        self.statuses = list(statuses or [])
        self.always = always
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with outer.lock:
                    outer.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = outer.always or (outer.statuses.pop(0) if outer.statuses else 200)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def of_type(self, event: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if json.loads(r.body)["type"] == event]

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def children_running(pid: int, arg: str) -> list[int]:
    """The child processes of `pid` (started by any of its threads) with `arg` among
    their command-line arguments."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if arg.encode() in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                found.append(int(child))
    return found


def open_files_in(pid: int, where: Path) -> list[str]:
    """The files (deleted ones too: temporary files) process `pid` holds open in `where`."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(where)):
            found.append(target)
    return found
