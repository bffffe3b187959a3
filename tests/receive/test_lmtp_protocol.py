"""The LMTP port's own protocol (`receive/lmtp.py`), over real sockets to a running
`crmdrop serve` of this module's own (a short idle timeout, a small spool threshold):
pipelining answered in order and in one write, one reply per recipient, the sequence,
syntax and size refusals, DATA's end and unstuffing byte for byte, a client gone
mid-DATA, the idle timeout, and a burst of messages on one connection filed once each."""

from __future__ import annotations

import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import SERVER_ENV, OwnServer, own_server
from tests.support import make_message, open_files_in, wait_for

IDLE_TIMEOUT = 3.0
THRESHOLD = 16 * 1024
UNKNOWN = "dropbox-unknown000000@dropbox.test"


@pytest.fixture(scope="module")
def spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("lmtp-spool"))


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, spool_dir: Path) -> Iterator[OwnServer]:
    env = {
        **SERVER_ENV,
        "CRMDROP_SMTP_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
        "CRMDROP_SMTP_SPOOL_BYTES": str(THRESHOLD),
        "TMPDIR": str(spool_dir),
    }
    yield from own_server("sqlite", Path(tmp_path_factory.mktemp("lmtp")), env)


def new_owner(own: OwnServer) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    user: dict[str, Any] = own.cli.add_user(f"owner-{tag}@mycorp.example", f"acct-{tag}")
    user["account"] = f"acct-{tag}"
    return user


class Client:
    """A raw LMTP client: what it sends, it sends as given; it reads whole replies."""

    def __init__(self, own: OwnServer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", own.server.lmtp_port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.banner = self.replies(1)[0]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> str:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed; unread {self.buffer!r}")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def replies(self, count: int) -> list[str]:
        """The next `count` replies (a multi-line reply is one, its lines joined)."""
        out: list[str] = []
        while len(out) < count:
            lines = [self._line()]
            while lines[-1][3:4] == "-":
                lines.append(self._line())
            out.append("\n".join(lines))
        return out

    def cmd(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.replies(1)[0]

    def one_read(self) -> bytes:
        """What one `recv` returns, once something has arrived."""
        assert self.buffer == b""
        return self.sock.recv(65536)

    def closed(self, timeout: float) -> bytes:
        """Everything the server sent until it closed (fails if it did not)."""
        self.sock.settimeout(timeout)
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        return data


def body_of(subject: str, owner: dict[str, Any], extra: str = "") -> bytes:
    msg = make_message(from_=owner["email"], to=["c@client.example"], subject=subject)
    raw = msg.as_bytes() + extra.encode()
    return raw.replace(b"\r\n.", b"\r\n..")


def test_pipelined_commands_are_answered_in_order_in_one_write(own: OwnServer) -> None:
    owner = new_owner(own)  # a fresh dropbox: its RCPT goes to the database
    with Client(own) as client:
        assert client.banner.startswith("220")
        lhlo = client.cmd("LHLO tests.example").split("\n")
        assert lhlo[0].startswith("250-") and lhlo[-1] == "250 HELP"
        assert {"250-PIPELINING", "250-8BITMIME", "250-SMTPUTF8", "250-SIZE 1000000"} <= set(lhlo)
        piped = [f"MAIL FROM:<{owner['email']}>", f"RCPT TO:<{UNKNOWN}>"]
        piped += [f"RCPT TO:<{owner['dropbox']['note']}>", "DATA"]
        client.send("".join(f"{c}\r\n" for c in piped).encode())
        first = client.one_read()
        lines = first.decode().split("\r\n")
        assert [x[:9] for x in lines] == ["250 2.1.0", "550 5.1.1", "250 2.1.5", "354 End d", ""]
        client.send(body_of("piped", owner) + b".\r\nQUIT\r\n")
        assert client.replies(2)[0].startswith("250 2.0.0 OK: queued as")
    data = own.cli.export(owner["account"])
    assert [d["subject"] for d in data["deliveries"]] == ["piped"]


def test_one_reply_per_recipient_accepted_and_refused(own: OwnServer) -> None:
    alice, bob = new_owner(own), new_owner(own)  # bob's dropbox refuses alice's mail
    boxes = [alice["dropbox"]["note"], alice["dropbox"]["case"], bob["dropbox"]["note"]]
    with Client(own) as client:
        client.cmd("LHLO tests.example")
        assert client.cmd(f"MAIL FROM:<{alice['email']}>").startswith("250")
        rcpts = [client.cmd(f"RCPT TO:<{b}>") for b in [boxes[0], UNKNOWN, *boxes[1:]]]
        assert [r[:3] for r in rcpts] == ["250", "550", "250", "250"]
        assert client.cmd("DATA").startswith("354")
        client.send(body_of("mixed", alice) + b".\r\n")
        replies = client.replies(3)  # one per accepted RCPT, in order
    assert [r[:9] for r in replies] == ["250 2.0.0", "250 2.0.0", "550 5.7.1"]
    statuses = [d["status"] for d in own.cli.export(bob["account"])["deliveries"]]
    assert statuses == ["rejected"]


def test_sequence_errors_and_rset(own: OwnServer) -> None:
    owner = new_owner(own)
    with Client(own) as client:
        assert client.cmd(f"MAIL FROM:<{owner['email']}>").startswith("503")  # before LHLO
        assert client.cmd("DATA").startswith("503")
        assert client.cmd("HELO x").startswith("500")  # LMTP has LHLO only
        client.cmd("LHLO tests.example")
        assert client.cmd(f"RCPT TO:<{owner['dropbox']['note']}>").startswith("503")  # no MAIL
        assert client.cmd(f"MAIL FROM:<{owner['email']}>").startswith("250")
        assert client.cmd("DATA").startswith("503")  # no RCPT
        assert client.cmd(f"MAIL FROM:<{owner['email']}>").startswith("503")  # nested
        assert client.cmd(f"RCPT TO:<{owner['dropbox']['note']}>").startswith("250")
        assert client.cmd("RSET").startswith("250")  # the transaction is gone
        assert client.cmd("DATA").startswith("503")
        assert client.cmd("RCPT TO:<x@y.example>").startswith("503")
        assert client.cmd("MAIL FROM:<a@b.example> FOO=1").startswith("555")
        assert client.cmd("MAIL FROM:<a@b.example> BODY=9BIT").startswith("501")
        assert client.cmd("MAIL FROM:a@b.example SIZE=x").startswith("501")
        assert client.cmd("MAIL TO:<a@b.example>").startswith("501")
        assert client.cmd("VRFY <a@b.example>").startswith("252")
        assert client.cmd("HELP").startswith("250 Supported commands: DATA HELP LHLO")
        assert client.cmd("NOOP").startswith("250")
        assert client.cmd("XYZZY").startswith('500 Error: command "XYZZY"')
        assert client.cmd("").startswith("500")
        assert client.cmd("QUIT").startswith("221")
        assert client.closed(5) == b""
    assert own.cli.export(owner["account"])["deliveries"] == []


def test_an_overlong_command_line_is_refused_and_the_session_goes_on(own: OwnServer) -> None:
    owner = new_owner(own)
    with Client(own) as client:
        client.cmd("LHLO tests.example")
        assert client.cmd("NOOP " + "x" * 600).startswith("500 Command line too long")
        huge = b"RCPT TO:<" + b"a" * 200_000  # past the line limit: skipped, not held
        client.send(huge)
        client.send(b"@b.example>\r\n")
        assert client.replies(1)[0].startswith("500 Command line too long")
        assert client.cmd(f"MAIL FROM:<{owner['email']}>").startswith("250")
        assert client.cmd(f"RCPT TO:<{owner['dropbox']['note']}>").startswith("250")


def test_dot_stuffing_and_a_bare_lf_before_a_dot_are_stored_byte_for_byte(
    own: OwnServer,
) -> None:
    owner = new_owner(own)
    marker = uuid.uuid4().hex
    raw = (
        f"From: {owner['email']}\r\nTo: c@client.example\r\nSubject: {marker}\r\n\r\n"
        ".a line with a leading dot\r\n..two dots\r\nbare\n.\r\nstill data\r\n"
    ).encode()
    stuffed = raw.replace(b"\r\n.", b"\r\n..")
    with Client(own) as client:
        client.cmd("LHLO tests.example")
        client.cmd(f"MAIL FROM:<{owner['email']}>")
        client.cmd(f"RCPT TO:<{owner['dropbox']['note']}>")
        assert client.cmd("DATA").startswith("354")
        for start in range(0, len(stuffed), 7):  # the end and the dots split across writes
            client.send(stuffed[start : start + 7])
        client.send(b".")
        client.send(b"\r")
        client.send(b"\n")
        assert client.replies(1)[0].startswith("250 2.0.0")
    engine = sa.create_engine(own.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT data FROM raw_messages")).all()
    finally:
        engine.dispose()
    assert [bytes(r.data) for r in rows if marker.encode() in bytes(r.data)] == [raw]


def test_an_empty_body_ends_at_once(own: OwnServer) -> None:
    owner = new_owner(own)
    with Client(own) as client:
        client.cmd("LHLO tests.example")
        client.cmd(f"MAIL FROM:<{owner['email']}>")
        client.cmd(f"RCPT TO:<{owner['dropbox']['note']}>")
        assert client.cmd("DATA").startswith("354")
        assert client.cmd(".")[:3] in ("250", "550")  # answered: no header is a refusal
        assert client.cmd("NOOP").startswith("250")


def test_an_oversized_message_is_refused_per_recipient_and_the_session_goes_on(
    own: OwnServer,
) -> None:
    owner = new_owner(own)  # the server's limit is 1,000,000 bytes
    boxes = [owner["dropbox"]["note"], owner["dropbox"]["case"]]
    big = body_of("big", owner, "x" * 998 + "\r\n") + (b"y" * 998 + b"\r\n") * 1100
    with Client(own) as client:
        client.cmd("LHLO tests.example")
        assert client.cmd(f"MAIL FROM:<{owner['email']}> SIZE=2000000").startswith("552 5.3.4")
        for subject, body, expected in (("big", big, "552 5.3.4"), ("small", None, "250 2.0.0")):
            client.cmd(f"MAIL FROM:<{owner['email']}>")
            for box in boxes:
                client.cmd(f"RCPT TO:<{box}>")
            assert client.cmd("DATA").startswith("354")
            client.send((body or body_of(subject, owner)) + b".\r\n")
            assert [r[:9] for r in client.replies(2)] == [expected, expected]
    data = own.cli.export(owner["account"])
    assert sorted(d["subject"] for d in data["deliveries"]) == ["small", "small"]


def test_a_client_gone_mid_data_loses_nothing_accepted_and_leaves_no_spool_file(
    own: OwnServer, spool_dir: Path
) -> None:
    owner = new_owner(own)
    assert own.server.proc is not None
    pid = own.server.proc.pid
    with Client(own) as client:
        client.cmd("LHLO tests.example")
        client.cmd(f"MAIL FROM:<{owner['email']}>")
        client.cmd(f"RCPT TO:<{owner['dropbox']['note']}>")
        client.cmd("DATA")
        client.send(body_of("accepted", owner) + b".\r\n")
        assert client.replies(1)[0].startswith("250 2.0.0")
        client.cmd(f"MAIL FROM:<{owner['email']}>")
        client.cmd(f"RCPT TO:<{owner['dropbox']['case']}>")
        client.cmd("DATA")
        cut_off = body_of("cut off", owner) + (b"z" * 998 + b"\r\n") * 100  # past the threshold
        client.send(cut_off)
        wait_for(lambda: open_files_in(pid, spool_dir), timeout=30, what="DATA spooled to a file")
    wait_for(lambda: not open_files_in(pid, spool_dir), timeout=30, what="the spool file closed")
    data = own.cli.export(owner["account"])
    assert [d["subject"] for d in data["deliveries"]] == ["accepted"]


def test_an_idle_session_is_told_and_closed(own: OwnServer) -> None:
    with Client(own) as client:
        client.cmd("LHLO tests.example")
        start = time.monotonic()
        rest = client.closed(IDLE_TIMEOUT * 5)
        assert rest.startswith(b"421 4.4.2")
        assert time.monotonic() - start >= IDLE_TIMEOUT - 0.5


def test_an_address_that_is_no_utf8_is_a_syntax_error(own: OwnServer) -> None:
    owner = new_owner(own)
    with Client(own) as client:
        client.cmd("LHLO tests.example")
        assert client.cmd(b"MAIL FROM:<\xff\xfe@x.example>").startswith("501 5.1.7")
        assert client.cmd(f"MAIL FROM:<{owner['email']}>").startswith("250")
        assert client.cmd(b"RCPT TO:<\xff\xfe@dropbox.test>").startswith("501 5.1.3")
        assert client.cmd("RCPT TO:<jos\u00e9@x.example>").startswith("550")  # UTF-8: looked up


def test_commands_written_one_byte_at_a_time(own: OwnServer) -> None:
    owner = new_owner(own)
    dialogue = (
        f"LHLO tests.example\r\nMAIL FROM:<{owner['email']}>\r\n"
        f"RCPT TO:<{owner['dropbox']['note']}>\r\nDATA\r\n"
    ).encode()
    with Client(own) as client:
        for byte in dialogue:
            client.send(bytes([byte]))
            select.select([], [], [], 0.001)
        assert [r[:3] for r in client.replies(4)] == ["250", "250", "250", "354"]
        for byte in body_of("bytewise", owner) + b".\r\n":
            client.send(bytes([byte]))
        assert client.replies(1)[0].startswith("250 2.0.0")
    data = own.cli.export(owner["account"])
    assert [d["subject"] for d in data["deliveries"]] == ["bytewise"]


def test_a_burst_on_one_connection_is_filed_exactly_once(own: OwnServer) -> None:
    owner = new_owner(own)
    count = 100
    with Client(own) as client:
        client.cmd("LHLO tests.example")
        for n in range(count):  # Postfix's pattern on a cached connection
            client.send(b"RSET\r\n")
            piped = f"MAIL FROM:<{owner['email']}>\r\nRCPT TO:<{owner['dropbox']['note']}>\r\n"
            client.send(piped.encode() + b"DATA\r\n")
            assert [r[:3] for r in client.replies(4)] == ["250", "250", "250", "354"]
            client.send(body_of(f"burst {n}", owner) + b".\r\n")
            assert client.replies(1)[0].startswith("250 2.0.0 OK: queued as")

    def filed() -> dict[str, Any] | None:
        data: dict[str, Any] = own.cli.export(owner["account"])
        done = [d for d in data["deliveries"] if d["status"] != "queued"]
        return data if len(done) >= count else None

    data = wait_for(filed, timeout=120, what="the burst filed")
    assert sorted(d["subject"] for d in data["deliveries"]) == sorted(
        f"burst {n}" for n in range(count)
    )
    assert {d["status"] for d in data["deliveries"]} == {"filed"}
    assert sorted(n["subject"] for n in data["notes"]) == sorted(f"burst {n}" for n in range(count))
