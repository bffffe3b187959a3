"""crmdrop behind Postfix (LMTP) beside Postfix delivering to `smtp-sink -L`, same run.

Two private Postfix instances (config and queue in a temp directory, loopback ports,
identical but for the next hop) are started: one hands mail for the dropbox domain to
`crmdrop serve` over LMTP, the other to `smtp-sink -L`, which accepts and discards.
The same client (aiosmtplib, 10 sessions, 5 KB messages) sends to each in turn,
round after round (each round starting with the next instance: A B, B A, ...); a round
ends when that Postfix's queue is empty again. The ratio is printed twice: of the two
medians, and the median of each round's own ratio (its two runs back to back). This
host's speed drifts by ±25 % over a run (every process's CPU per message moves
together), and a round's pair shares the drift that the medians of separate rounds
do not. Everything
is stopped afterwards. Each round prints the whole machine's busy fraction and the CPU
per message of the next hop, of that Postfix (master and all it forked), of the client
and of the rest of the machine: a round with the machine near 100% busy was CPU-bound
(the next hop's CPU per message matters), one well below was latency-bound (Postfix's
delivery slots waited on the next hop: see the delays printed at the end).

Needs: root (Postfix's master drops privileges itself), Debian's `postfix` package
(`postfix`, `/usr/sbin/smtp-sink`); the bench installs nothing.

    .venv/bin/python bench/bench_postfix.py [--messages 2000] [--rounds 3] [--with-worker]
        [--set 'lmtp_destination_concurrency_limit = 50' ...] [--floor]

`--floor` adds a third Postfix delivering to `bench/lmtp_floor.py`, a minimal LMTP
responder in Python that stores nothing: the least a Python next hop costs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DOMAIN,
    add_user,
    bench_database,
    cpu_seconds,
    crmdrop_env,
    free_port,
    machine_cpu_seconds,
    machine_load,
    median,
    scratch_dir,
    smtp_load,
    start_serve,
    stop,
    tree_cpu_seconds,
    wait_port,
)

MASTER = """\
{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""

MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = /tmp
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench-{name}.localhost
mydestination =
relay_domains = {domain}
relay_transport = lmtp:inet:127.0.0.1:{next_hop}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
local_recipient_maps =
alias_maps =
alias_database =
biff = no
"""


_DELAYS = re.compile(r"delays=([0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+)")


class Postfix:
    """A private Postfix instance on 127.0.0.1:port relaying the dropbox domain over LMTP."""

    def __init__(self, name: str, next_hop: int, settings: list[str] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"crmdrop-postfix-{name}-"))
        self.port = free_port()
        etc = self.root / "etc"
        etc.mkdir()
        (self.root / "data").mkdir()
        (self.root / "queue").mkdir()
        self.root.chmod(0o755)  # Postfix's daemons run as the postfix user
        main = MAIN.format(root=self.root, name=name, domain=DOMAIN, next_hop=next_hop)
        (etc / "main.cf").write_text(main + "".join(f"{line}\n" for line in settings or []))
        (etc / "master.cf").write_text(MASTER.format(port=self.port))
        for conf in ("dynamicmaps.cf", "postfix-files"):
            shutil.copy(f"/etc/postfix/{conf}", etc / conf)
        shutil.chown(self.root / "data", "postfix")
        self.etc = etc

    def start(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True)  # log: maillog
        wait_port(self.port)

    def queued(self) -> int:
        queue = self.root / "queue"
        return sum(
            1
            for sub in ("maildrop", "incoming", "active", "deferred", "hold")
            if (queue / sub).is_dir()
            for path in (queue / sub).rglob("*")
            if path.is_file()
        )

    def drained(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.02)
        deferred = self.root / "queue" / "deferred"
        if self.queued() or (deferred.is_dir() and any(deferred.rglob("*"))):
            raise RuntimeError(f"{self.root}: mail left in the queue; see maillog")

    def delays(self) -> str:
        """Postfix's own split of each delivery's time (the maillog's `delays=a/b/c/d`),
        averaged: before the queue manager, waiting in it for a delivery slot (the LMTP
        client's concurrency), connection setup (a cached connection's RSET too), and
        the transmission (up to the next hop's reply). A large b says the next hop's
        latency, not its CPU, bounds the rate."""
        found = [
            [float(x) for x in m.group(1).split("/")]
            for line in (self.root / "maillog").read_text().splitlines()
            if (m := _DELAYS.search(line)) and "status=sent" in line
        ]
        if not found:
            return "no deliveries logged"
        means = [sum(column) / len(found) * 1000 for column in zip(*found, strict=True)]
        return "mean delays (ms) in/queue/conn/xmit " + "/".join(f"{x:.1f}" for x in means)

    def master_pid(self) -> int:
        return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class Round:
    """One round's rate and where the machine's CPU went, per message (ms): the next hop
    (crmdrop or smtp-sink), that Postfix instance (master and every process it forked),
    the client (this process: the SMTP load and the queue polling), and the rest of the
    machine (other processes, the kernel's own work). `busy` is the whole machine's busy
    fraction over the round: near 1.0 the round was CPU-bound, well below it the rate was
    bounded by latency (Postfix's slots waiting on the next hop)."""

    rate: float
    hop: float
    postfix: float
    client: float
    rest: float
    busy: float

    def line(self, name: str) -> str:
        return (
            f"{name:>7}: {self.rate:4.0f} msg/s, machine busy {self.busy:4.0%}; CPU per message "
            f"(ms): next hop {self.hop:.2f}, Postfix {self.postfix:.2f}, client "
            f"{self.client:.2f}, rest of machine {self.rest:.2f}"
        )


def round_rate(
    postfix: Postfix, hop: int, sender: str, rcpt: str, args: argparse.Namespace
) -> Round:
    """Messages per second from the client's first send to Postfix's queue being empty,
    and the CPU per message of each party, which a busy host does not inflate the way it
    does wall time."""
    master = postfix.master_pid()
    hop_cpu, pf_cpu, client_cpu = cpu_seconds(hop), tree_cpu_seconds(master), time.process_time()
    (busy, elapsed), start = machine_cpu_seconds(), time.perf_counter()
    smtp_load(postfix.port, sender, rcpt, total=args.messages, sessions=args.sessions)
    postfix.drained()
    rate = args.messages / (time.perf_counter() - start)
    busy_end, elapsed_end = machine_cpu_seconds()
    hop_cpu = cpu_seconds(hop) - hop_cpu
    pf_cpu = tree_cpu_seconds(master) - pf_cpu
    client_cpu = time.process_time() - client_cpu
    per = 1000 / args.messages
    return Round(
        rate=rate,
        hop=hop_cpu * per,
        postfix=pf_cpu * per,
        client=client_cpu * per,
        rest=(busy_end - busy - hop_cpu - pf_cpu - client_cpu) * per,
        busy=(busy_end - busy) / (elapsed_end - elapsed),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--with-worker", action="store_true", help="crmdrop files meanwhile")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="'NAME = VALUE'",
        help="a main.cf line for every Postfix instance (repeatable)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also Postfix -> bench/lmtp_floor.py (a Python LMTP responder storing nothing)",
    )
    args = parser.parse_args()
    print(machine_load())
    data = scratch_dir("crmdrop-bench-")
    with bench_database("sqlite", data) as url:
        env = crmdrop_env(data, url)
        user = add_user(env)
        served, _, lmtp = start_serve(env, *([] if args.with_worker else ["--no-worker"]))
        sink_port = free_port()
        sink = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-u", "postfix", "-L", f"127.0.0.1:{sink_port}", "256"]
        )
        hops = [("sink", sink_port, sink), ("crmdrop", lmtp, served)]
        if args.floor:
            floor_port = free_port()
            floor_script = str(Path(__file__).resolve().parent / "lmtp_floor.py")
            hops.append(
                (
                    "floor",
                    floor_port,
                    subprocess.Popen([sys.executable, floor_script, str(floor_port)]),
                )
            )
        instances = [(name, Postfix(name, port, args.set), hop) for name, port, hop in hops]
        try:
            for _, port, _ in hops:
                wait_port(port)
            for _, postfix, _ in instances:
                postfix.start()
            rounds: dict[str, list[Round]] = {name: [] for name, _, _ in hops}
            rcpt = user["dropbox"]["note"]
            for n in range(args.rounds):
                # Each round starts with another instance (A B, B A, ...): this host's
                # speed drifts over a run, and whoever always went first would gain by it.
                for name, postfix, hop in (
                    instances[n % len(instances) :] + instances[: n % len(instances)]
                ):
                    result = round_rate(postfix, hop.pid, user["email"], rcpt, args)
                    rounds[name].append(result)
                    print(f"round {n + 1} {result.line(name)}; {machine_load()}", flush=True)
            delays = {name: postfix.delays() for name, postfix, _ in instances}
        finally:
            for _, postfix, _ in instances:
                postfix.stop()
            for _, _, hop in hops:
                stop(hop)
    rates = {k: [r.rate for r in v] for k, v in rounds.items()}
    cpu = {k: [r.hop for r in v] for k, v in rounds.items()}
    s, o = median(rates["sink"]), median(rates["crmdrop"])
    sink_rounds, ours_rounds = ([round(x) for x in rates[k]] for k in ("sink", "crmdrop"))
    print(f"Postfix -> smtp-sink -L:          {s:6.0f} msg/s  rounds {sink_rounds}")
    print(f"Postfix -> crmdrop LMTP (durable): {o:6.0f} msg/s  rounds {ours_rounds}")
    paired = [c / k for c, k in zip(rates["crmdrop"], rates["sink"], strict=True)]
    print(f"ratio of the medians: {o / s:.2f} (goal >= 0.85); {machine_load()}")
    print(
        f"ratio round by round: median {median(paired):.2f} "
        f"{[round(x, 2) for x in paired]} (each round's two runs back to back)"
    )
    print(
        "next hop's CPU per message (ms): smtp-sink "
        f"{median(cpu['sink']):.2f} {[round(x, 2) for x in cpu['sink']]}, crmdrop "
        f"{median(cpu['crmdrop']):.2f} {[round(x, 2) for x in cpu['crmdrop']]}"
    )
    if "floor" in rates:
        f = median(rates["floor"])
        print(
            f"Postfix -> Python LMTP floor:      {f:6.0f} msg/s  rounds "
            f"{[round(x) for x in rates['floor']]}; its CPU per message (ms) "
            f"{median(cpu['floor']):.2f} {[round(x, 2) for x in cpu['floor']]}"
        )
    for name, text in delays.items():
        print(f"Postfix -> {name}: {text} (all rounds)")


if __name__ == "__main__":
    main()
