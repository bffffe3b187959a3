"""The LMTP port's CPU per message, in process: `start_servers` (LMTP only) on SQLite
under a client process that speaks as Postfix does on a cached connection (per message
`RSET`, then `MAIL`, `RCPT`, `DATA` pipelined, then the body), `--sessions` at once.
Prints the server process's CPU per message (all its threads: the event loop and the
commit thread) and the event loop's thread alone, and with `--profile` the functions
that spent the loop thread's CPU (cProfile timed by `thread_time`; it inflates the total).

Runs whatever `crmdrop` the interpreter imports: run it with each worktree's Python to
compare servers, interleaved (A B A B):

    .venv/bin/python bench/profile_lmtp.py [--messages 3000] [--sessions 10] [--profile]
    .venv/bin/python bench/profile_lmtp.py --parts   # each piece alone (this branch only)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_user, crmdrop_env, free_port, message

if TYPE_CHECKING:
    from crmdrop.receive.service import Receiver

CLIENT = r"""
import socket, sys, threading
port, sender, rcpt = sys.argv[1:4]
per, sessions = int(sys.argv[4]), int(sys.argv[5])
body = open(sys.argv[6], "rb").read()

def replies(f, n):
    got = 0
    while got < n:
        line = f.readline()
        assert line[:1] in (b"2", b"3"), line
        if line[3:4] != b"-":
            got += 1

def session():
    s = socket.create_connection(("127.0.0.1", int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    replies(f, 1)
    s.sendall(b"LHLO bench\r\n"); replies(f, 1)
    piped = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
    for _ in range(per):
        s.sendall(b"RSET\r\n"); replies(f, 1)
        s.sendall(piped); replies(f, 3)
        s.sendall(body); replies(f, 1)
    s.sendall(b"QUIT\r\n"); replies(f, 1)

threads = [threading.Thread(target=session) for _ in range(sessions)]
for t in threads: t.start()
for t in threads: t.join()
"""


def _setup(data: Path) -> tuple[dict[str, Any], Receiver]:
    """A fresh SQLite database in `data` with one user; the receiver over it."""
    env = crmdrop_env(data, f"sqlite:///{data / 'crmdrop.db'}")
    user = add_user(env)
    os.environ.update(env)
    from crmdrop.config import load_settings
    from crmdrop.receive.service import Receiver
    from crmdrop.store.db import Database
    from crmdrop.store.directory import OwnerCache

    settings = load_settings()
    db = Database(settings.db_url)
    return user, Receiver(db, settings, OwnerCache(db))


def run(args: argparse.Namespace, data: Path) -> None:
    from crmdrop.receive.smtp import start_servers

    user, receiver = _setup(data)
    settings = receiver.settings
    port = free_port()
    body_file = data / "body.eml"
    raw = message(user["email"], "c@client.example").replace(b"\n", b"\r\n")
    body_file.write_bytes(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    per = args.messages // args.sessions
    client = [
        sys.executable,
        "-c",
        CLIENT,
        str(port),
        user["email"],
        user["dropbox"]["note"],
        str(per),
        str(args.sessions),
        str(body_file),
    ]

    async def main() -> tuple[float, float, float]:
        servers = await start_servers(receiver, settings, smtp=None, lmtp=("127.0.0.1", port))
        await asyncio.to_thread(subprocess.run, [*client[:6], "20", "1", client[-1]], check=True)
        profile = cProfile.Profile(time.thread_time) if args.profile else None
        cpu, wall, loop_cpu = time.process_time(), time.perf_counter(), time.thread_time()
        if profile is not None:
            profile.enable()
        proc = await asyncio.create_subprocess_exec(*client)
        await proc.wait()
        if profile is not None:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        loop_cpu = time.thread_time() - loop_cpu
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        for server in servers:
            server.close()
        assert proc.returncode == 0
        return cpu, loop_cpu, wall

    cpu, loop_cpu, wall = asyncio.run(main())
    total = per * args.sessions
    print(
        f"{total} messages, {args.sessions} sessions: server CPU {cpu / total * 1000:.3f} ms "
        f"per message (the event loop's thread {loop_cpu / total * 1000:.3f}), "
        f"{total / wall:.0f} msg/s wall"
    )
    receiver.db.dispose()


class _Transport(asyncio.Transport):
    """Stands in for the socket: the protocol's cost alone (`--parts`)."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1)


def parts(args: argparse.Namespace, data: Path) -> None:
    """CPU per message of each piece alone, on one thread: the LMTP protocol (with the
    RCPT answer from memory and a commit that answers at once), `Receiver.prepare`
    (headers, sender check) and `Receiver.commit` of one message (SQLite)."""
    from crmdrop.receive.batch import GroupCommitter
    from crmdrop.receive.envelope import Acceptor, Transaction
    from crmdrop.receive.lmtp import LMTPServer
    from crmdrop.spool import Spool

    user, receiver = _setup(data)
    settings = receiver.settings
    raw = message(user["email"], "c@client.example").replace(b"\n", b"\r\n")
    answer = receiver.check_recipient(user["dropbox"]["note"])
    rcpt = answer[1]
    assert rcpt is not None

    class Instant(Acceptor):
        async def deliver(self, txn: Transaction, raw: Spool, **kw: object) -> list[str]:
            return ["250 2.0.0 OK"] * len(txn.rcpts)

    count = args.messages
    piped = f"MAIL FROM:<{user['email']}>\r\nRCPT TO:<{user['dropbox']['note']}>\r\nDATA\r\n"
    body = raw.replace(b"\r\n.", b"\r\n..") + b".\r\n"

    async def protocol() -> float:
        acceptor = Instant(receiver, GroupCommitter(receiver), protocol="lmtp", max_recipients=50)
        server = LMTPServer.factory(acceptor, settings)()
        server.connection_made(_Transport())
        server.data_received(b"LHLO bench\r\n")
        start = time.thread_time()
        for _ in range(count):
            server.data_received(b"RSET\r\n")
            server.data_received(piped.encode())
            server.data_received(body)
            await asyncio.sleep(0)  # the commit's task runs and answers
        return time.thread_time() - start

    def prepare() -> float:
        start = time.thread_time()
        for _ in range(count):
            receiver.prepare(
                mail_from=user["email"], rcpts=[rcpt], raw=Spool.of(raw), protocol="lmtp", peer="x"
            )
        return time.thread_time() - start

    def commit() -> float:
        held = receiver.held_connection()
        start = time.thread_time()
        for _ in range(count):
            item = receiver.prepare(
                mail_from=user["email"], rcpts=[rcpt], raw=Spool.of(raw), protocol="lmtp", peer="x"
            )
            receiver.commit([item], held)
        return time.thread_time() - start - prepare()

    for name, seconds in (
        ("LMTP protocol", asyncio.run(protocol())),
        ("prepare", prepare()),
        ("commit (one message each)", commit()),
    ):
        print(f"{name}: {seconds / count * 1000:.3f} ms CPU per message")
    receiver.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--parts", action="store_true", help="each piece alone, one thread")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crmdrop-lmtp-") as tmp:
        (parts if args.parts else run)(args, Path(tmp))


if __name__ == "__main__":
    main()
