"""Deliveries filed per second by `crmdrop worker` processes, SQLite or PostgreSQL.

Seeds N contacts (with their addresses) in a fresh database, then for each round and
each worker count asked for (interleaved: 1, 2, 1, 2, ...): queues M deliveries of
5 KB messages from the owner to one existing and one new contact in one transaction,
and times that many `crmdrop worker` processes draining them (parse, decide, apply,
finish), from the queueing commit to the last delivery finished.

    .venv/bin/python bench/bench_filing.py --db sqlite --contacts 1000000
    .venv/bin/python bench/bench_filing.py --db postgresql --contacts 100000 --workers 1,2
    .venv/bin/python bench/bench_filing.py --db postgresql --contacts 100000 --workers 1,2 --pin
    .venv/bin/python bench/bench_filing.py --db postgresql --contacts 100000 --workers 1,2 \
        --cpu-cap 0.5

On a host with no more cores than workers, a worker and its PostgreSQL backend take turns
and the scheduler places the four of two workers on two cores as it can: `--pin` keeps
worker n and its backends on core n, `--cpu-cap S` holds each to S of one core (both need
root and cgroups; `cpucap.py` says why). Each drain prints how busy the machine's cores
were, so a run that other work disturbed shows; how long the workers and their backends
waited for a core while runnable (with cores idle, that is the scheduler's placement, not
a lack of cores); and how many filings a batch held.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow
from sqlalchemy import func, insert, make_url, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    bench_database,
    cpu_seconds,
    crmdrop_env,
    machine_cpu_seconds,
    machine_load,
    median,
    message,
    runnable_wait_seconds,
    scratch_dir,
    stop,
    tree_cpu_seconds,
)
from cpucap import CpuCaps
from crmdrop.config import Settings, load_settings
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.inbound import NewDelivery, add_delivery
from crmdrop.store.models import Contact, ContactEmail, Delivery
from crmdrop.store.signals import QUEUE, Waker, notify, wake_path


def seed_contacts(db: Database, account_id: int, count: int) -> None:
    now = datetime.now(UTC)
    batch = 10_000
    for start in range(0, count, batch):
        n = min(batch, count - start)
        with db.writing() as session:
            session.execute(
                insert(Contact),
                [
                    {
                        "id": start + i + 1,
                        "account_id": account_id,
                        "name": f"Contact {start + i}",
                        "created_at": now,
                        "last_activity_at": now,
                    }
                    for i in range(n)
                ],
            )
            session.execute(
                insert(ContactEmail),
                [
                    {
                        "account_id": account_id,
                        "contact_id": start + i + 1,
                        "email": f"contact{start + i}@customer{(start + i) % 5000}.example",
                    }
                    for i in range(n)
                ],
            )


Owner = tuple[int, int, str]  # (account id, user id, email) of the bench's one owner


def bench_owner(url: str, data: Path) -> tuple[Settings, Database, Owner]:
    """A migrated bench database at `url` and its one dropbox owner (account "bench")."""
    settings = load_settings(data_dir=data, domain="dropbox.bench", database_url=url)
    db = Database(settings.db_url)
    db.migrate()
    with db.writing() as session:
        user = accounts.add_user(session, "owner@mycorp.example", name="O", account="bench")
        owner = (user.account_id, user.id, user.email)
    return settings, db, owner


def seed(db: Database, owner: Owner, contacts: int) -> None:
    """`contacts` contacts for the owner's account, then what a bulk load needs after."""
    seed_contacts(db, owner[0], contacts)
    _sequences_past_seeded(db)


def _sequences_past_seeded(db: Database) -> None:
    """PostgreSQL: the seeded rows had explicit ids; move the id sequence past them, and
    gather the planner's statistics, as autovacuum does within a minute of a bulk load
    (without them PostgreSQL guesses that an account has a few dozen addresses and scans
    all 100,000 of them for each batch: 25 ms a query instead of 0.3 ms)."""
    if not db.is_sqlite:
        with db.writing() as session:
            session.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('contacts', 'id'), max(id)) FROM contacts"
                )
            )
        with db.write_engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


def vacuum_if_autovacuum_off(db: Database) -> bool:
    """PostgreSQL with autovacuum off (this machine's CI configuration, conf.d/90-ci.conf):
    VACUUM ANALYZE before a drain, outside its timing, as autovacuum keeps a deployment's
    tables. Without it every round runs on the statistics of the empty tables and on
    the dead rows of the rounds before: the batch's duplicate check then read every note
    of the account (a bitmap scan on `account_id`, 4.5 ms at 8,000 notes, twice a batch),
    so the server's CPU per filing grew round after round (0.69 -> 1.25 ms over six).
    With autovacuum on, nothing is done here and its work counts in the drains."""
    if db.is_sqlite:
        return False
    with db.write_engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if conn.execute(text("SHOW autovacuum")).scalar() == "on":
            return False
        conn.execute(text("VACUUM ANALYZE"))
    return True


def queue(db: Database, owner: Owner, contacts: int, count: int, tag: str) -> None:
    """`count` deliveries in one transaction: the workers see them all at once, woken
    as the intake wakes them (PostgreSQL: NOTIFY in the transaction; SQLite: a poke
    after it). Without it they found the work at their next safety poll (2 s): an idle
    second, on average, in every round's time."""
    account_id, user_id, email = owner
    rng = random.Random(tag)
    now = datetime.now(UTC)
    with db.write_connection() as conn:
        if not db.is_sqlite:
            notify(conn, QUEUE)
        for n in range(count):
            known = rng.randrange(contacts)
            to = f"contact{known}@customer{known % 5000}.example, new{tag}x{n}@p{n}.example"
            new = NewDelivery(
                account_id, user_id, "note", "dropbox@bench", email, "smtp", "", None, "b", email
            )
            add_delivery(conn, new, message(email, to, n=n), now=now)
    if db.sqlite_file is not None:
        Waker(wake_path(db.sqlite_file)).poke()


def batches_since(db: Database, since: datetime) -> int:
    """How many batches filed deliveries since `since`: a batch finishes its deliveries
    with one timestamp. Two workers that split a drain into smaller batches than one
    would (each claim racing the other's) would each do more work per filing."""
    with db.reading() as session:
        found = session.scalar(
            select(func.count(func.distinct(Delivery.finished_at))).where(
                Delivery.finished_at >= since
            )
        )
        return int(found or 0)


def pending(db: Database) -> int:
    with db.reading() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == "queued")
            )
            or 0
        )


# What PostgreSQL did over a drain, from its statistics views: autovacuum and analyze runs
# (of this database's tables), checkpoints and WAL (the whole server's), rollbacks.
_COUNTERS = """
SELECT (SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables),
       (SELECT coalesce(sum(autoanalyze_count), 0) FROM pg_stat_user_tables),
       (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),
       (SELECT wal_records FROM pg_stat_wal),
       (SELECT wal_fpi FROM pg_stat_wal),
       (SELECT wal_bytes FROM pg_stat_wal),
       (SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database())
"""
_COUNTER_NAMES = ("autovacuum", "autoanalyze", "checkpoints", "WAL records", "WAL FPI", "WAL bytes")
# This database's server processes and the shared background ones (datname NULL); the
# probe's own backend is left out, as are other databases' (other users of the server).
_PROCESSES = """
SELECT pid, backend_type, state, wait_event_type, wait_event, application_name
FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND (datname = current_database() OR datname IS NULL)
"""
_QUEUED = "SELECT count(*) FROM deliveries WHERE status = 'queued'"


@dataclass
class ServerProbe:
    """PostgreSQL's side of a drain, sampled at each poll: the CPU of this database's
    backends (the workers'), of autovacuum and of the background processes, read from
    /proc (other databases' backends — other users of a shared server — are not counted);
    what the workers' backends were doing when sampled (on CPU, waiting on a lock or
    on I/O, or idle in a transaction while the worker computes); the counters above."""

    conn: psycopg.Connection[TupleRow]
    caps: CpuCaps | None = None  # workers' backends seen join their worker's group
    first: dict[int, tuple[str, float]] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    waits: dict[int, tuple[float, float]] = field(default_factory=dict)  # backends' first, last
    states: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    counters: tuple[int, ...] = ()

    @classmethod
    def open(cls, url: str, caps: CpuCaps | None = None) -> ServerProbe:
        plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        probe = cls(psycopg.connect(plain, autocommit=True), caps)
        probe.sample(started=True)  # with caps: the workers' backends into their groups
        return probe

    def begin(self) -> None:
        """The drain starts now: CPU, states and counters count from here (the bench's own
        backend, which queued the drain's deliveries meanwhile, is not counted)."""
        self.first.clear()
        self.waits.clear()
        self.states.clear()
        self.samples = 0
        self.counters = self._counters()
        self.sample(started=True)

    def _counters(self) -> tuple[int, ...]:
        row = self.conn.execute(_COUNTERS).fetchone()
        assert row is not None
        return tuple(int(v or 0) for v in row)

    def sample(self, *, started: bool = False) -> None:
        self.samples += not started
        for pid, kind, state, wait_type, wait, app in self.conn.execute(_PROCESSES).fetchall():
            if self.caps is not None:
                self.caps.adopt(int(pid), app)
            backend = kind == "client backend"
            try:
                used = cpu_seconds(int(pid))
                waited = runnable_wait_seconds(int(pid)) if backend else 0.0
            except OSError:  # gone meanwhile
                continue
            if backend:  # as for CPU: one started meanwhile counts from 0
                first = self.waits.get(pid, (waited if started else 0.0, 0.0))[0]
                self.waits[pid] = (first, waited)
            if pid not in self.first:  # a process that started during the drain: all of it
                self.first[pid] = (str(kind), used if started else 0.0)
            self.last[pid] = used
            if backend and not started and state != "idle":
                self.states[_state(state, wait_type, wait)] += 1

    def queued(self) -> int:
        row = self.conn.execute(_QUEUED).fetchone()
        return int(row[0]) if row else 0

    def report(self, filings: int) -> str:
        self.sample()
        cpu: defaultdict[str, float] = defaultdict(float)
        for pid, (kind, start) in self.first.items():
            group = kind if kind in ("client backend", "autovacuum worker") else "background"
            cpu[group] += self.last[pid] - start
        done = [b - a for a, b in zip(self.counters, self._counters(), strict=True)]
        self.conn.close()
        per = {k: v / filings * 1000 for k, v in cpu.items()}
        waited = sum(last - first for first, last in self.waits.values()) / filings * 1000
        seen = self.samples or 1
        states = ", ".join(f"{k} {n / seen:.2f}" for k, n in self.states.most_common(6))
        counted = ", ".join(f"{n} {v}" for n, v in zip(_COUNTER_NAMES, done, strict=False))
        return (
            f"PostgreSQL server: {sum(per.values()):.2f} ms per filing (backends "
            f"{per.get('client backend', 0):.2f}, autovacuum {per.get('autovacuum worker', 0):.2f},"
            f" background {per.get('background', 0):.2f}); WAL {done[5] / filings / 1024:.1f} KiB"
            f" per filing; {counted}, rollbacks {done[6]}; backends waited for a core"
            f" {waited:.2f} ms per filing\n"
            f"    workers' backends not idle, on average: {states or 'none'}"
        )


def _state(state: str | None, wait_type: str | None, wait: str | None) -> str:
    if state == "active":
        return f"waiting {wait_type}:{wait}" if wait_type else "active, on CPU"
    return str(state)


def start_workers(
    env: dict[str, str], count: int, log: Path, caps: CpuCaps | None
) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes; with caps, each in its own group, its connections named."""
    procs: list[subprocess.Popen[bytes]] = []
    with log.open("wb") as out:
        for n in range(count):
            named = {**env, "PGAPPNAME": CpuCaps.app_name(n)} if caps else env
            proc = subprocess.Popen(
                [sys.executable, "-m", "crmdrop", "worker"], env=named, stderr=out
            )
            procs.append(proc)
            if caps:
                caps.add(n, proc.pid)
    return procs


SAMPLE_EVERY = 0.1  # seconds between two samples of the server's processes
POLL = 0.02  # seconds between two looks at the queue, while much is left


def poll_pause(left: int, done: int, elapsed: float) -> float:
    """The wait before the next look at the queue: 20 ms while much is left, down to 2 ms
    as the end nears (half the time the rate so far says is left). A round's end is then
    seen within a few ms, not 10 ms late on average (1 % of a 1-second round: the
    two-worker rounds are the shorter ones, so it lowered their ratio), without looking
    every 2 ms all along (each look costs the server ≈ 0.3 ms of CPU)."""
    if done <= 0:
        return POLL
    return min(POLL, max(0.002, left * elapsed / done / 2))


def wait_drained(db: Database, probe: ServerProbe | None, total: int, start: float) -> None:
    """Until nothing is queued, sampling the server's processes every `SAMPLE_EVERY`."""
    sampled = start
    while left := probe.queued() if probe else pending(db):
        now = time.perf_counter()
        if probe and now - sampled >= SAMPLE_EVERY:
            probe.sample()
            sampled = now
        time.sleep(poll_pause(left, total - left, now - start))


def timed_drain(
    db: Database,
    env: dict[str, str],
    owner: Owner,
    args: argparse.Namespace,
    workers: int,
    tag: str,
) -> float:
    logs = Path(env["CRMDROP_DATA_DIR"]) / f"workers-{tag}.log"
    caps = CpuCaps.open(args.cpu_cap, pin=args.pin) if args.cpu_cap or args.pin else None
    procs = start_workers(env, workers, logs, caps)
    probe: ServerProbe | None = None
    try:
        queue(db, owner, args.contacts, workers * 4, f"warm{tag}")  # workers up and warm
        while pending(db):
            time.sleep(0.05)
        # Connected before the queueing (its first look, which also puts the workers'
        # backends in their groups, is not in the timing); samples every 100 ms: the
        # probe's own CPU (≈ 0.7 ms a sample) competes with the workers for the cores.
        probe = None if db.is_sqlite else ServerProbe.open(db.url, caps)
        queued_at = datetime.now(UTC)
        queue(db, owner, args.contacts, args.messages, tag)
        # From the queueing commit (the workers are woken by it), not before the queueing:
        # the bench's own inserts of the round's messages are not the workers' time.
        start = time.perf_counter()
        cpu = sum(tree_cpu_seconds(p.pid) for p in procs)
        waited = sum(runnable_wait_seconds(p.pid) for p in procs)
        machine = machine_cpu_seconds()
        if probe:
            probe.begin()
        wait_drained(db, probe, args.messages, start)
        elapsed = time.perf_counter() - start
        cpu = sum(tree_cpu_seconds(p.pid) for p in procs) - cpu
        waited = sum(runnable_wait_seconds(p.pid) for p in procs) - waited
        busy = [b - a for a, b in zip(machine, machine_cpu_seconds(), strict=True)]
        if caps:
            print("  " + caps.report(), flush=True)
    finally:
        for proc in procs:
            stop(proc)
        if caps:
            caps.close()
    print(
        f"  {workers} worker(s): {cpu / args.messages * 1000:.2f} ms of worker CPU per filing "
        f"(= {args.messages / cpu:.0f} filings/s per busy core); the machine's cores busy "
        f"{busy[0] / busy[1]:.0%} of the drain; waited for a core "
        f"{waited / args.messages * 1000:.2f} ms per filing; "
        f"{args.messages / max(1, batches_since(db, queued_at)):.1f} filings per batch",
        flush=True,
    )
    if probe is not None:
        print("  " + probe.report(args.messages), flush=True)
    _report_log(logs)
    rate: float = args.messages / elapsed
    return rate


def prime(db: Database, env: dict[str, str], owner: Owner, contacts: int) -> None:
    """PostgreSQL: file 1,000 messages before the timed rounds (one worker, untimed), so
    that the first round does not run on plans made for empty tables: a foreign-key
    check planned on an empty `notes` is a sequential scan, kept by that backend while
    the table grows (every later round starts new workers, which plan on a filled one)."""
    if db.is_sqlite:
        return
    proc = subprocess.Popen([sys.executable, "-m", "crmdrop", "worker"], env=env)
    try:
        queue(db, owner, contacts, 1000, "prime")
        while pending(db):
            time.sleep(0.05)
    finally:
        stop(proc)


def _report_log(path: Path) -> None:
    """The workers' warnings (a batch that fell back to one delivery at a time, errors):
    counted, and the first few shown (the log goes with the run's directory)."""
    lines = path.read_text(errors="replace").splitlines()
    fallbacks = sum("applying one at a time" in line for line in lines)
    if lines:
        print(f"  workers logged {len(lines)} lines, {fallbacks} batch fallbacks; first:")
        for line in lines[:5]:
            print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--contacts", type=int, default=100_000)
    # 4,000: two workers file 2,000 in ≈ 0.8 s, where a burst's start and its last batch
    # (≈ 30 ms, one worker busy and the other done) weigh on two workers' rate.
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--workers", default="1", help="worker counts to compare, e.g. 1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cpu-cap",
        type=float,
        metavar="SHARE",
        help="hold each worker and its PostgreSQL backends to SHARE of one core (cgroups)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="keep worker n and its PostgreSQL backends on core n (mod the cores)",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    data = scratch_dir("crmdrop-filing-")
    print(machine_load())
    with bench_database(args.db, data) as url:
        _, db, owner = bench_owner(url, data)
        t0 = time.perf_counter()
        seed(db, owner, args.contacts)
        print(f"seeded {args.contacts} contacts in {time.perf_counter() - t0:.1f}s")
        env = crmdrop_env(data, url)
        prime(db, env, owner, args.contacts)
        rates: dict[int, list[float]] = {n: [] for n in counts}
        for r in range(args.rounds):
            for n in counts:
                if vacuum_if_autovacuum_off(db) and r == 0 and n == counts[0]:
                    print("autovacuum is off: VACUUM ANALYZE before each drain (untimed)")
                rate = timed_drain(db, env, owner, args, n, f"r{r}w{n}")
                rates[n].append(rate)
                print(f"round {r + 1}, {n} worker(s): {rate:.0f} filings/s", flush=True)
        with db.reading() as session:
            statuses = dict(
                session.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                ).all()
            )
            retried = session.scalar(select(func.count()).where(Delivery.attempts > 1))
        db.dispose()
    for n in counts:
        print(
            f"{args.db}, {args.contacts} contacts, {n} worker(s): "
            f"{median(rates[n]):.0f} filings/s (median; rounds {[round(x) for x in rates[n]]})"
        )
    if len(counts) > 1:
        base = median(rates[counts[0]])
        for n in counts[1:]:
            print(f"{n} workers / {counts[0]}: {median(rates[n]) / base:.2f}x")
    print(f"statuses {statuses}, {retried} claimed more than once; {machine_load()}")


if __name__ == "__main__":
    main()
