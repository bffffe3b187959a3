"""Limits of the public SMTP port, against a running `crmdrop serve` of its own: sessions in
all and per client IP, commands per session, the idle timeout, and the token guesser's
tarpit and refusal (issue #11). Other loopback addresses (127.0.0.2, …) stand in for
other clients."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmdrop.receive.limits import LIMITS_FILE, TOO_MANY_FROM_YOU, WINDOW, PortGuard, SlotCounts
from tests.conftest import SERVER_ENV, OwnServer, own_server
from tests.support import wait_for

LIMITS = {
    **SERVER_ENV,
    "CRMDROP_SMTP_MAX_SESSIONS": "3",
    "CRMDROP_SMTP_MAX_SESSIONS_PER_IP": "2",
    "CRMDROP_SMTP_MAX_COMMANDS": "8",
    "CRMDROP_SMTP_MAX_SAME_COMMAND": "5",
    "CRMDROP_SMTP_IDLE_TIMEOUT": "2",
    "CRMDROP_SMTP_UNKNOWN_RCPT_TARPIT": "2",
    "CRMDROP_SMTP_UNKNOWN_RCPT_LIMIT": "4",
    "CRMDROP_SMTP_TARPIT_SECONDS": "0.5",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServer]:
    """The SMTP limits, small; no worker: these tests stop at the SMTP dialogue."""
    yield from own_server("sqlite", Path(tmp_path_factory.mktemp("limits")), LIMITS, worker=False)


class Client:
    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=30, source_address=(source, 0)
        )
        self.reader = self.sock.makefile("rb")
        self.banner = self.reply()

    def reply(self) -> str:
        lines = []
        while True:
            line = self.reader.readline().decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def test_sessions_are_limited_in_all_and_per_client_ip(limited: OwnServer) -> None:
    port = limited.server.smtp_port
    first, second = Client(port), Client(port)
    try:
        assert first.banner.startswith("220") and second.banner.startswith("220")
        third = Client(port)
        assert third.banner.startswith("421 4.7.0") and "your address" in third.banner
        assert third.closed()
        other = Client(port, "127.0.0.2")
        assert other.banner.startswith("220")
        fourth = Client(port, "127.0.0.3")
        assert fourth.banner.startswith("421 4.7.0 Too many connections")
        other.close()
        first.cmd("QUIT")
        first.close()
        time.sleep(0.3)  # the server sees the sessions end
        again = Client(port, "127.0.0.3")
        assert again.banner.startswith("220"), again.banner
        again.close()
    finally:
        second.close()


def test_a_command_given_too_often_ends_the_session_with_421(limited: OwnServer) -> None:
    client = Client(limited.server.smtp_port, "127.0.0.4")
    try:
        replies = [client.cmd("NOOP") for _ in range(6)]
        assert all(r.startswith("250") for r in replies[:5])
        assert replies[5] == "421 4.7.0 NOOP sent too many times"
        assert client.closed()
    finally:
        client.close()


def test_commands_are_limited_in_all_per_session(limited: OwnServer) -> None:
    client = Client(limited.server.smtp_port, "127.0.0.8")
    try:
        verbs = ["EHLO a.example", "NOOP", "RSET", "HELP", "NOOP", "RSET", "HELP", "NOOP"]
        replies = [client.cmd(verb) for verb in verbs]  # 8 in all, no verb over 5 times
        assert all(r.startswith(("250", "214")) for r in replies), replies
        assert "MAIL" in replies[3]  # HELP still lists the (counted) verbs
        assert client.cmd("VRFY x@y.example") == (
            "421 4.7.0 Too many commands in one session, please reconnect"
        )
        assert client.closed()
    finally:
        client.close()
    fresh = Client(limited.server.smtp_port, "127.0.0.8")  # a new session starts from zero
    try:
        assert fresh.cmd("NOOP").startswith("250")
    finally:
        fresh.close()


def test_an_idle_session_is_closed(limited: OwnServer) -> None:
    client = Client(limited.server.smtp_port, "127.0.0.5")
    try:
        assert client.cmd("EHLO idle.example").startswith("250")
        client.sock.settimeout(20)
        assert client.closed()  # nothing sent: the server hangs up after 2 s
    finally:
        client.close()


def test_a_token_guesser_is_slowed_down_then_refused(limited: OwnServer) -> None:
    port = limited.server.smtp_port
    client = Client(port, "127.0.0.6")
    try:
        assert client.cmd("EHLO guesser.example").startswith("250")
        assert client.cmd("MAIL FROM:<g@guess.example>").startswith("250")
        timings = []
        for n in range(4):
            started = time.monotonic()
            reply = client.cmd(f"RCPT TO:<dropbox-guess{n}aaaaaaaaaaaaaaaa@dropbox.test>")
            timings.append(time.monotonic() - started)
            assert reply.startswith("550 5.1.1"), reply
        assert timings[2] >= 0.45 and timings[3] >= 0.95  # the tarpit: 0.5 s, then 1 s
        reply = client.cmd("RCPT TO:<dropbox-guess9aaaaaaaaaaaaaaaa@dropbox.test>")
        assert reply.startswith("421 4.7.0"), reply
        assert client.closed()
    finally:
        client.close()
    refused = Client(port, "127.0.0.6")
    assert refused.banner.startswith("421 4.7.0") and "unknown recipients" in refused.banner
    refused.close()
    other = Client(port, "127.0.0.7")
    assert other.banner.startswith("220")
    other.close()


def test_unknown_recipients_count_for_an_hour_only() -> None:
    guard = PortGuard(
        max_sessions=10, max_per_ip=10, tarpit_after=1, refuse_after=2, tarpit_seconds=1.0
    )
    assert guard.before_rcpt("10.0.0.1", 0.0).delay == 0.0
    guard.unknown_rcpt("10.0.0.1", 0.0)
    assert guard.before_rcpt("10.0.0.1", 1.0).delay == 1.0
    guard.unknown_rcpt("10.0.0.1", 1.0)
    assert guard.before_rcpt("10.0.0.1", 2.0).refuse
    assert guard.enter("10.0.0.1", 2.0) is not None
    assert guard.enter("10.0.0.2", 2.0) is None
    assert not guard.before_rcpt("10.0.0.1", WINDOW + 2.0).refuse
    assert guard.enter("10.0.0.1", WINDOW + 2.0) is None


def test_acceptor_processes_share_their_counts_through_one_file(tmp_path: Path) -> None:
    path = tmp_path / LIMITS_FILE
    limits = dict(max_sessions=10, max_per_ip=1, tarpit_after=5, refuse_after=2)
    first = PortGuard(**limits, tarpit_seconds=1.0, counts=SlotCounts.shared(path, fresh=True))
    second = PortGuard(**limits, tarpit_seconds=1.0, counts=SlotCounts.shared(path, fresh=False))
    assert first.enter("10.0.0.1", 0.0) is None
    assert second.enter("10.0.0.1", 0.0) == TOO_MANY_FROM_YOU  # one limit for both
    first.unknown_rcpt("10.0.0.1", 1.0)
    second.unknown_rcpt("10.0.0.1", 1.0)
    assert first.before_rcpt("10.0.0.1", 2.0).refuse and second.before_rcpt("10.0.0.1", 2.0).refuse
    first.leave("10.0.0.1")
    assert first.counts.sessions() == 0
    # An acceptor SIGKILLed with a session open: its count stays until a restarted
    # acceptor claims a row; its unknown recipients keep counting.
    script = (
        "import sys; from pathlib import Path; from crmdrop.receive.limits import SlotCounts;"
        "c = SlotCounts.shared(Path(sys.argv[1]), fresh=False);"
        "c.add_session('10.0.0.2', 1); c.add_unknown('10.0.0.3', 1.0)"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert second.counts.sessions_of("10.0.0.2") == 1
    SlotCounts.shared(path, fresh=False)
    assert second.counts.sessions_of("10.0.0.2") == 0 and second.counts.sessions() == 0
    assert second.counts.unknown("10.0.0.3", 2.0) == 1


def _listening(port: int) -> int:
    found = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        found += int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A"
    return found


def test_two_acceptors_enforce_one_per_ip_session_limit(tmp_path: Path) -> None:
    env = {**LIMITS, "CRMDROP_DATA_DIR": str(tmp_path)}
    for own in own_server("sqlite", tmp_path, env, "--acceptors", "2", worker=False):
        port = own.server.smtp_port
        wait_for(lambda port=port: _listening(port) == 2 or None, timeout=60, what="both acceptors")
        clients = [Client(port, "127.0.0.9") for _ in range(8)]  # the kernel spreads them
        try:
            banners = [c.banner for c in clients]
            assert sum(b.startswith("220") for b in banners) == 2, banners  # the limit: 2
            assert all(
                b.startswith("421 4.7.0 Too many connections from your address")
                for b in banners
                if not b.startswith("220")
            )
        finally:
            for client in clients:
                client.close()
