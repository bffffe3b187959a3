"""Shared bits of the benchmarks: a 5 KB message and a concurrent SMTP load."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import psycopg

DOMAIN = "dropbox.bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def message(sender: str, to: str, size: int = 5000, n: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"bench {n}"
    msg["Message-ID"] = make_msgid(domain="bench.example")
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n"
    msg.set_content(line * max(1, size // len(line)))
    return msg.as_bytes()


async def _session(port: int, sender: str, rcpt: str, count: int, payloads: list[bytes]) -> int:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
    await client.connect()
    ok = 0
    for i in range(count):
        errors, _ = await client.sendmail(sender, [rcpt], payloads[i % len(payloads)])
        ok += not errors
    await client.quit()
    return ok


def smtp_load(port: int, sender: str, rcpt: str, *, total: int, sessions: int) -> float:
    """Messages accepted per second by `sessions` concurrent connections sending `total`."""
    payloads = [message(sender, f"c{i}@client.example", n=i) for i in range(200)]

    async def run() -> int:
        per = total // sessions
        results = await asyncio.gather(
            *(_session(port, sender, rcpt, per, payloads) for _ in range(sessions))
        )
        return sum(results)

    start = time.perf_counter()
    accepted = asyncio.run(run())
    elapsed = time.perf_counter() - start
    assert accepted == (total // sessions) * sessions, accepted
    return accepted / elapsed


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def scratch_dir(prefix: str) -> Path:
    """A new directory for one run's data, removed when the bench exits (a 1M-contact
    SQLite database is hundreds of MB; this machine kind once had 287 MB free), unless
    `CRMDROP_BENCH_KEEP=1` asks to keep it for a look afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("CRMDROP_BENCH_KEEP") != "1":
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def median(values: list[float]) -> float:
    return statistics.median(values)


PG_ADMIN_URL = os.environ.get("CRMDROP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def bench_database(kind: str, data: Path) -> Iterator[str]:
    """A fresh database URL: SQLite in `data`, or a new PostgreSQL database (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{data / 'crmdrop.db'}"
        return
    name = f"crmdrop_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# A load client keeps each session for hundreds of messages: lift the per-session command
# limits (a public port's defense, answered 421 past 1,000 commands or 200 MAILs).
BENCH_SESSIONS = {
    "CRMDROP_SMTP_MAX_COMMANDS": "10000000",
    "CRMDROP_SMTP_MAX_SAME_COMMAND": "10000000",
}


def crmdrop_env(data: Path, url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CRMDROP_DATA_DIR": str(data),
        "CRMDROP_DATABASE_URL": url,
        "CRMDROP_DOMAIN": DOMAIN,
        "CRMDROP_LOG_LEVEL": "WARNING",
        **BENCH_SESSIONS,
        **extra,
    }


def crmdrop(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "crmdrop", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def add_user(env: dict[str, str], email: str = "bench@mycorp.example") -> dict[str, Any]:
    crmdrop("migrate", env=env)  # every other command stops on a schema that is behind
    out = crmdrop("users", "add", email, "--name", "B", "--account", "bench", "--json", env=env)
    return dict(json.loads(out))


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) so far, in MB."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(t) for t in text)
    return found


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return (
        f"load average {one:.1f} / {five:.1f} (1 / 5 min) on {os.cpu_count()} cores; "
        "host speed {:.0f}-{:.0f} ns per loop step".format(*host_speed())
    )


def host_speed(samples: int = 12, steps: int = 200_000) -> tuple[float, float]:
    """CPU nanoseconds per step of a plain Python loop, fastest and slowest of `samples`
    (≈ 0.1 s in all): one host's figures against another's, and whether this one's
    speed moved during the run. Hosts of this machine kind differ, and one may change its
    speed by seconds: the session-11 host (1 Dec 2026) went between 36 and 70 ns, on
    either core, with nothing else running."""
    times = []
    for _ in range(samples):
        start = time.process_time()
        total = 0
        for i in range(steps):
            total += i
        times.append((time.process_time() - start) / steps * 1e9)
    return min(times), max(times)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used: robust where wall time is not (a busy host)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runnable_wait_seconds(pid: int) -> float:
    """Seconds the threads of a live process have spent runnable but not running, waiting
    for a core (/proc/PID/task/*/schedstat, its second field): on a machine whose cores
    are not all busy, waiting there means the scheduler queued the process behind another
    on one core while the other core idled, not that the work lacked a core."""
    waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            waited += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError):  # a thread gone meanwhile
            continue
    return waited / 1e9


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, elapsed) CPU seconds of the whole machine since boot, summed over its cores,
    from /proc/stat: busy is user, nice, system, irq, softirq and steal time; elapsed adds
    idle and iowait. Two readings' differences give the busy fraction between them: near
    1.0 the host is CPU-saturated, so a rate measured then says how much CPU the work
    needs, not how fast the next hop answers."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, (busy + idle + iowait) / tick


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of `root` and of every process below it, those that ended too:
    a child's CPU moves into its parent's cutime/cstime when the parent reaps it, so each
    live member is counted with its reaped descendants. Postfix's master forks and reaps
    its smtpd, cleanup and lmtp processes throughout a round: a reading of the live ones
    alone would lose those that exited."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, own + reaped children's CPU)
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        cpu = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
        stats[int(proc.name)] = (int(fields[1]), cpu)
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(kids.get(pid, ()))
    return total


def postgres_cpu_seconds() -> float:
    """User + system CPU of every PostgreSQL server process on this host (backends,
    WAL writer, checkpointer, autovacuum): the database's share of a run's work, read
    the same way as the workers' (a backend that ended meanwhile is not counted)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() in ("postgres", "postmaster"):
                total += cpu_seconds(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return total


def start_serve(env: dict[str, str], *flags: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """`crmdrop serve` on free loopback ports: (process, SMTP port, LMTP port)."""
    smtp, lmtp = free_port(), free_port()
    ports = ["--smtp", f"127.0.0.1:{smtp}", "--lmtp", f"127.0.0.1:{lmtp}"]
    args = [*ports, "--http", f"127.0.0.1:{free_port()}", *flags]
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmdrop", "serve", "--no-demo", *args],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return proc, smtp, lmtp
