"""Durable SMTP accepts per second: `crmdrop serve` (SQLite, or a new PostgreSQL database
with `--db postgresql`) beside a bare aiosmtpd that accepts and discards, in the same run,
with the same load (5 KB messages, 10 concurrent sessions, a separate client process).

    .venv/bin/python bench/bench_accept.py [--messages 3000] [--rounds 3] [--no-worker]
        [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_user,
    bench_database,
    cpu_seconds,
    crmdrop_env,
    free_port,
    machine_load,
    median,
    scratch_dir,
    smtp_load,
    start_serve,
    wait_port,
)


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
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    print(machine_load())
    data = scratch_dir("crmdrop-bench-")
    with bench_database(args.db, data) as url:
        env = crmdrop_env(data, url)
        user = add_user(env)
        rates, cpu = run_rounds(args, env, user["email"], user["dropbox"]["note"])
    (bare_rates, ours), (bare_cpu, our_cpu) = rates, cpu
    b, o = median(bare_rates), median(ours)
    print(f"bare aiosmtpd (discard):       {b:7.0f} msg/s  rounds {[round(x) for x in bare_rates]}")
    print(f"crmdrop serve ({args.db}, durable): {o:7.0f} msg/s  rounds {[round(x) for x in ours]}")
    print(f"ratio: {o / b:.2f} (goal >= 0.8); {machine_load()}")
    print(
        f"server CPU per message (ms): bare {median(bare_cpu):.2f} "
        f"{[round(x, 2) for x in bare_cpu]}, crmdrop {median(our_cpu):.2f} "
        f"{[round(x, 2) for x in our_cpu]} (with --no-worker: the SMTP process alone)"
    )


Pair = tuple[list[float], list[float]]


def run_rounds(
    args: argparse.Namespace, env: dict[str, str], sender: str, rcpt: str
) -> tuple[Pair, Pair]:
    """((bare rates, crmdrop rates), (bare CPU, crmdrop CPU)) per round, A B A B."""
    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("bare_smtpd.py")), str(bare_port)]
    )
    served, smtp_port, _ = start_serve(env, *(["--no-worker"] if args.no_worker else []))
    try:
        wait_port(bare_port)
        wait_port(smtp_port)
        bare_rates: list[float] = []
        ours: list[float] = []
        bare_cpu: list[float] = []
        our_cpu: list[float] = []
        load = partial(smtp_load, total=args.messages, sessions=args.sessions)
        for _ in range(args.rounds):
            send_bare = partial(load, bare_port, sender, rcpt)
            send_ours = partial(load, smtp_port, sender, rcpt)
            bare_rates.append(timed(bare.pid, send_bare, args.messages, bare_cpu))
            ours.append(timed(served.pid, send_ours, args.messages, our_cpu))
    finally:
        bare.send_signal(signal.SIGTERM)
        served.send_signal(signal.SIGTERM)
        bare.wait()
        served.wait()
    return (bare_rates, ours), (bare_cpu, our_cpu)


if __name__ == "__main__":
    main()
