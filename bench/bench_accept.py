"""Durable SMTP accepts per second: `crmdrop serve` on SQLite beside a bare aiosmtpd
that accepts and discards, in the same run, with the same load (5 KB messages,
10 concurrent sessions, a separate client process).

    .venv/bin/python bench/bench_accept.py [--messages 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_SESSIONS, free_port, machine_load, median, smtp_load, wait_port

DOMAIN = "dropbox.bench"


def crmdrop(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "crmdrop", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used: robust where wall time is not (a busy host)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(pid: int, run: Callable[[], float], messages: int, cpu: list[float]) -> float:
    """`run()`'s rate; appends the server's CPU per message (ms) to `cpu`."""
    before = cpu_seconds(pid)
    rate = run()
    cpu.append((cpu_seconds(pid) - before) * 1000 / messages)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--no-worker", action="store_true", help="measure accepts alone")
    args = parser.parse_args()
    print(machine_load())
    data = Path(tempfile.mkdtemp(prefix="crmdrop-bench-"))
    env = {**os.environ, "CRMDROP_DOMAIN": DOMAIN, "CRMDROP_LOG_LEVEL": "WARNING", **BENCH_SESSIONS}
    crmdrop("migrate", "--data", str(data), env=env)
    user = json.loads(
        crmdrop(
            "users",
            "add",
            "bench@mycorp.example",
            "--name",
            "B",
            "--account",
            "bench",
            "--json",
            "--data",
            str(data),
            env=env,
        )
    )
    rcpt = user["dropbox"]["note"]
    bare_port, smtp_port = free_port(), free_port()
    bare = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("bare_smtpd.py")), str(bare_port)]
    )
    served = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crmdrop",
            "serve",
            "--no-demo",
            *(["--no-worker"] if args.no_worker else []),
            "--data",
            str(data),
            "--smtp",
            f"127.0.0.1:{smtp_port}",
            "--lmtp",
            f"127.0.0.1:{free_port()}",
            "--http",
            f"127.0.0.1:{free_port()}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(bare_port)
        wait_port(smtp_port)
        bare_rates, ours = [], []
        bare_cpu: list[float] = []
        our_cpu: list[float] = []
        load = partial(smtp_load, total=args.messages, sessions=args.sessions)
        for _ in range(args.rounds):
            send_bare = partial(load, bare_port, user["email"], rcpt)
            send_ours = partial(load, smtp_port, user["email"], rcpt)
            bare_rates.append(timed(bare.pid, send_bare, args.messages, bare_cpu))
            ours.append(timed(served.pid, send_ours, args.messages, our_cpu))
    finally:
        bare.send_signal(signal.SIGTERM)
        served.send_signal(signal.SIGTERM)
        bare.wait()
        served.wait()
    b, o = median(bare_rates), median(ours)
    print(f"bare aiosmtpd (discard):       {b:7.0f} msg/s  rounds {[round(x) for x in bare_rates]}")
    print(f"crmdrop serve (SQLite, durable): {o:7.0f} msg/s  rounds {[round(x) for x in ours]}")
    print(f"ratio: {o / b:.2f} (goal >= 0.8); {machine_load()}")
    print(
        f"server CPU per message (ms): bare {median(bare_cpu):.2f} "
        f"{[round(x, 2) for x in bare_cpu]}, crmdrop {median(our_cpu):.2f} "
        f"{[round(x, 2) for x in our_cpu]} (with --no-worker: the SMTP process alone)"
    )


if __name__ == "__main__":
    main()
