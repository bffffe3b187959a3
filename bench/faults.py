"""Faults under load: mixed SMTP, LMTP and `crmdrop ingest` traffic while the worker and
the whole server are SIGKILLed at random, PostgreSQL is restarted, and (SQLite) the disk
holding the database fills up.

    .venv/bin/python bench/faults.py --backend postgresql --seconds 300 [--pg-restarts 2]
    .venv/bin/python bench/faults.py --backend sqlite --seconds 300   # on a 64 MB tmpfs

Every message carries a unique Message-ID. At the end the server is started cleanly, the
queue drained, and the account exported: each message that got a 250 (exit 0 for
ingest) must be filed exactly once. Reports sent / accepted / temporary (4xx or no
answer) / permanent (5xx, must be 0) / filed / duplicated / lost. Results:
docs/reliability.md. Restarting PostgreSQL touches every user of the cluster: keep
--pg-restarts small; never run this in the test suite.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import SERVER_ENV  # noqa: E402
from tests.support import Cli, ServerProcess, make_message, pg_database, wait_for  # noqa: E402

PG_RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]


class Ledger:
    """What each client was told, per Message-ID."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: dict[str, str] = {}  # message id -> accepted | temporary | permanent
        self.sent = 0

    def record(self, message_id: str, outcome: str) -> None:
        with self.lock:
            self.sent += 1
            if outcome == "permanent":
                print(f"PERMANENT refusal of {message_id}", flush=True)
            self.outcomes[message_id] = outcome


def _smtp(port: int, owner: dict[str, object], raw: bytes, lmtp: bool) -> str:
    cls = smtplib.LMTP if lmtp else smtplib.SMTP
    box = owner["dropbox"]["note"]  # type: ignore[index]
    try:
        with cls("127.0.0.1", port, timeout=30) as client:
            refused = client.sendmail(str(owner["email"]), [box], raw)
        return "accepted" if not refused else "temporary"
    except smtplib.SMTPResponseException as exc:
        return "permanent" if exc.smtp_code >= 500 else "temporary"
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [c for c, _ in exc.recipients.values()]
        return "permanent" if any(c >= 500 for c in codes) else "temporary"
    except (OSError, smtplib.SMTPException):
        return "temporary"  # no answer: the sender's MTA retries


def _ingest(env: dict[str, str], owner: dict[str, object], raw: bytes) -> str:
    box = owner["dropbox"]["note"]  # type: ignore[index]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "crmdrop", "ingest", "--to", box, "--from", str(owner["email"])],
            input=raw,
            env={**os.environ, **env},
            capture_output=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return "temporary"  # no answer: the MTA keeps the message and retries
    if proc.returncode == 0:
        return "accepted"
    return "temporary" if proc.returncode == 75 else "permanent"


def traffic(
    server: ServerProcess,
    env: dict[str, str],
    owner: dict[str, object],
    ledger: Ledger,
    stop: threading.Event,
    seed: int,
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        n = rng.randrange(10**12)
        mid = f"<fault-{seed}-{n}@faults.example>"
        msg = make_message(
            from_=str(owner["email"]),
            to=[f"c{n % 50}@customer.example"],
            subject=f"fault {n}",
            message_id=mid,
        ).as_bytes()
        kind = rng.choice(["smtp", "smtp", "lmtp", "ingest"])
        if kind == "ingest":
            outcome = _ingest(env, owner, msg)
        else:
            port = server.smtp_port if kind == "smtp" else server.lmtp_port
            outcome = _smtp(port, owner, msg, kind == "lmtp")
        ledger.record(mid.strip("<>"), outcome)
        if outcome != "accepted":
            time.sleep(0.2)


def worker_pids(server: ServerProcess) -> list[int]:
    assert server.proc is not None
    out = subprocess.run(
        ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
    ).stdout
    return [int(p) for p in out.split()]


def faults(
    server: ServerProcess,
    stop: threading.Event,
    *,
    pg_restarts: int,
    fill: Path | None,
    seed: int,
    log: collections.Counter[str],
) -> None:
    rng = random.Random(seed)
    while not stop.wait(rng.uniform(5, 15)):
        choice = rng.choice(["worker", "server", "pg" if pg_restarts else "server", "disk"])
        if choice == "worker":
            for pid in worker_pids(server):
                os.kill(pid, signal.SIGKILL)
            log["worker SIGKILL"] += 1
        elif choice == "server":
            server.kill()
            time.sleep(rng.uniform(0.5, 3))
            server.start()
            log["server SIGKILL + restart"] += 1
        elif choice == "pg" and pg_restarts > 0:
            pg_restarts -= 1
            subprocess.run(PG_RESTART, check=False, capture_output=True, timeout=120)
            log["PostgreSQL restart"] += 1
        elif choice == "disk" and fill is not None:
            filler = fill / "filler"
            with filler.open("wb") as out:
                try:
                    while True:
                        out.write(b"\0" * 1024 * 1024)
                        out.flush()
                except OSError:
                    pass
            time.sleep(rng.uniform(3, 8))
            filler.unlink()
            log["disk full"] += 1


def settle(server: ServerProcess, cli: Cli, account: str, accepted: int) -> dict[str, object]:
    if server.proc is None or server.proc.poll() is not None:
        server.start()

    def drained() -> dict[str, object] | None:
        data = cli.export(account)
        queued = [d for d in data["deliveries"] if d["status"] == "queued"]
        return data if not queued and len(data["deliveries"]) >= accepted else None

    result: dict[str, object] = wait_for(drained, timeout=900, what="the queue to drain")
    return result


def report(ledger: Ledger, data: dict[str, object], log: collections.Counter[str]) -> None:
    notes: collections.Counter[str] = collections.Counter(
        n["message_id"]
        for n in data["notes"]  # type: ignore[attr-defined]
    )
    filed_deliveries: collections.Counter[str] = collections.Counter(
        d["message_id"]
        for d in data["deliveries"]  # type: ignore[attr-defined]
        if d["status"] in ("filed",)
    )
    outcomes = collections.Counter(ledger.outcomes.values())
    accepted = [m for m, o in ledger.outcomes.items() if o == "accepted"]
    lost = [m for m in accepted if notes[m] == 0]
    duplicated = [m for m, c in notes.items() if c > 1] + [
        m for m, c in filed_deliveries.items() if c > 1
    ]
    failed = [d for d in data["deliveries"] if d["status"] == "failed"]  # type: ignore[attr-defined]
    print(f"faults: {dict(log)}")
    print(
        f"sent {ledger.sent}, accepted {outcomes['accepted']}, temporary "
        f"{outcomes['temporary']}, permanent {outcomes['permanent']}, filed "
        f"{sum(1 for m in accepted if notes[m] == 1)}, duplicated {len(duplicated)}, "
        f"lost {len(lost)}, parked failed {len(failed)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pg-restarts", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.backend == "sqlite":
        args.pg_restarts = 0  # PostgreSQL is not under test here: leave the others' alone
    if args.backend == "postgresql":
        with pg_database() as url:
            run(args, {"CRMDROP_DATABASE_URL": url}, None)
    else:
        mount = Path(tempfile.mkdtemp(prefix="crmdrop-tmpfs-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
        try:
            run(args, {}, mount)
        finally:
            subprocess.run(["umount", str(mount)], check=False)


def run(args: argparse.Namespace, extra: dict[str, str], fill: Path | None) -> None:
    data_dir = fill / "data" if fill is not None else Path(tempfile.mkdtemp(prefix="faults-"))
    env = {
        **SERVER_ENV,
        **extra,
        "CRMDROP_MAX_ATTEMPTS": "50",
        "CRMDROP_DATA_DIR": str(data_dir),
    }
    server = ServerProcess(data_dir, env)
    server.start()
    cli = Cli(env)
    owner = cli.add_user("faults@mycorp.example", "faults")
    ledger, stop, log = Ledger(), threading.Event(), collections.Counter[str]()
    threads = [
        threading.Thread(target=traffic, args=(server, env, owner, ledger, stop, i))
        for i in range(args.clients)
    ]
    threads.append(
        threading.Thread(
            target=faults,
            args=(server, stop),
            kwargs=dict(pg_restarts=args.pg_restarts, fill=fill, seed=args.seed, log=log),
        )
    )
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    accepted = sum(1 for o in ledger.outcomes.values() if o == "accepted")
    try:
        data = settle(server, cli, "faults", accepted)
        report(ledger, data, log)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
