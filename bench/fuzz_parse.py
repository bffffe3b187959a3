"""Fuzz `parse_message` and `decide`, seeded with the shared corpora (cut at 64 KB); inputs
are mutated and spliced with known-hostile fragments (`tests/fuzzing.py`).

    .venv/bin/python bench/fuzz_parse.py --engine plain --procs 2 --runs 1000000
    .venv/bin/python bench/fuzz_parse.py --engine atheris [--runs N] [--seconds S]

Two engines. `atheris`: libFuzzer, coverage-guided, crmdrop instrumented; a failure stops
the run. `plain`: no instrumentation (several times faster per message), our mutator
only, in `--procs` processes, each with its own random seed; a failure is counted, its
input kept in bench/out/, and the run goes on. Both apply the same checks: no exception
of ours, no empty-parse fallback, at most one second of CPU per message (a slow message
is timed twice more, as the shared machine stalls now and then), and peak RSS reported
(plain: a process over --rss-limit-mb is a failure). Counts go to --stats (JSON) as the
run goes, so a run stopped at any time still reports its true count.
Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from corpora_util import iter_corpus_emails  # noqa: E402

OUT = ROOT / "bench" / "out"


@dataclass
class Stats:
    """One process's counts (plain), or the sum of them."""

    runs: int = 0
    exceptions: int = 0  # our code raised
    fallbacks: int = 0  # the parser gave up: the empty parse
    slow: int = 0  # over SLOW_SECONDS of CPU, three times
    over_rss: int = 0
    max_seconds: float = 0.0
    cpu_seconds: float = 0.0
    max_rss_mb: float = 0.0
    elapsed: float = 0.0


def _seeds() -> list[bytes]:
    from tests.fuzzing import MAX_LEN

    return [raw[:MAX_LEN] for _path, raw in iter_corpus_emails()]


def _keep(kind: str, worker: int, run: int, data: bytes, detail: str) -> None:
    base = OUT / f"{kind}-w{worker}-{run}"
    base.with_suffix(".eml").write_bytes(data)
    base.with_suffix(".txt").write_text(detail)


def _one(data: bytes, index: int, stats: Stats, worker: int) -> None:
    """One message through the target, counted; failures kept (at most 50 per kind)."""
    from tests.fuzzing import SLOW_SECONDS, FuzzFailure, check_message

    try:
        seconds = check_message(data, index, limit=0).seconds
    except FuzzFailure as failure:
        stats.fallbacks += 1
        if stats.fallbacks <= 50:
            _keep("fallback", worker, stats.runs, data, str(failure))
        return
    except Exception:  # any exception of ours is the finding
        stats.exceptions += 1
        if stats.exceptions <= 50:
            _keep("crash", worker, stats.runs, data, traceback.format_exc())
        return
    if seconds > SLOW_SECONDS:
        retimed = min(check_message(data, index, limit=0).seconds for _ in range(2))
        if retimed > SLOW_SECONDS:
            stats.slow += 1
            _keep("slow", worker, stats.runs, data, f"{retimed:.2f} s CPU")
        seconds = retimed
    stats.max_seconds = max(stats.max_seconds, seconds)


def _plain_worker(worker: int, seed: int, runs: int, deadline: float, rss_limit: int) -> None:
    """Mutate corpus seeds (a quarter of the time, the previous input again) and run
    each through the target, writing this process's counts every 2,000 messages."""
    seeds, rng = _seeds(), random.Random(seed)
    from tests.fuzzing import mutate

    stats, started, previous = Stats(), time.time(), b""
    path = OUT / f"fuzz-plain-w{worker}.json"
    cpu0 = time.process_time()
    while stats.runs < runs and time.time() < deadline:
        base = previous if previous and rng.random() < 0.25 else rng.choice(seeds)
        previous = mutate(base, rng)
        _one(previous, stats.runs, stats, worker)
        stats.runs += 1
        if stats.runs % 2000 == 0 or stats.runs == runs:
            stats.max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            stats.over_rss = int(stats.max_rss_mb > rss_limit)
            stats.cpu_seconds = time.process_time() - cpu0
            stats.elapsed = time.time() - started
            _write(path, stats)
    stats.max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stats.over_rss = int(stats.max_rss_mb > rss_limit)
    stats.cpu_seconds = time.process_time() - cpu0
    stats.elapsed = time.time() - started
    _write(path, stats)


def _write(path: Path, stats: Stats) -> None:
    """Atomically: the parent reads these files while the workers write them."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(stats)))
    tmp.replace(path)


def _sum(args: argparse.Namespace, started: float) -> dict[str, object]:
    total = Stats()
    for worker in range(args.procs):
        path = OUT / f"fuzz-plain-w{worker}.json"
        if not path.exists():
            continue
        one = Stats(**json.loads(path.read_text()))
        for name in ("runs", "exceptions", "fallbacks", "slow", "over_rss", "cpu_seconds"):
            setattr(total, name, getattr(total, name) + getattr(one, name))
        total.max_seconds = max(total.max_seconds, one.max_seconds)
        total.max_rss_mb = max(total.max_rss_mb, one.max_rss_mb)
    total.elapsed = time.time() - started
    return {"engine": "plain", "procs": args.procs, "seed": args.seed, **asdict(total)}


def run_plain(args: argparse.Namespace) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("fuzz-plain-w*.json"):
        old.unlink()
    started, deadline = time.time(), time.time() + args.seconds
    share = [args.runs // args.procs + (i < args.runs % args.procs) for i in range(args.procs)]
    procs = [
        multiprocessing.Process(
            target=_plain_worker,
            args=(i, args.seed * 1000 + i, share[i], deadline, args.rss_limit_mb),
        )
        for i in range(args.procs)
    ]
    for proc in procs:
        proc.start()
    while any(proc.is_alive() for proc in procs):
        for proc in procs:
            proc.join(timeout=10 / len(procs))
        args.stats.write_text(json.dumps(_sum(args, started), indent=1))
    summary = _sum(args, started)
    exit_codes = [proc.exitcode for proc in procs]
    summary["exit_codes"] = exit_codes
    args.stats.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    bad = ("exceptions", "fallbacks", "slow", "over_rss")
    return int(any(summary[name] for name in bad) or any(exit_codes))


def run_atheris(args: argparse.Namespace) -> None:
    import atheris
    from atheris.import_hook import instrument_imports  # the stubs' `atheris` omits it

    with instrument_imports(include=["crmdrop"]):
        from tests.fuzzing import SLOW_SECONDS, check_message, mutate

    state = {"runs": 0, "slow": 0, "max_seconds": 0.0, "started": time.time()}

    def save() -> None:
        state["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        state["elapsed"] = time.time() - float(state["started"])
        args.stats.write_text(json.dumps(state, indent=1))

    def one_input(data: bytes) -> None:
        run = check_message(data, len(data), limit=0)
        if run.seconds > SLOW_SECONDS:
            retimed = min(check_message(data, len(data), limit=0).seconds for _ in range(2))
            if retimed > SLOW_SECONDS:
                state["slow"] = int(state["slow"]) + 1
                (args.stats.parent / f"slow-{state['runs']}.eml").write_bytes(data)
        state["runs"] = int(state["runs"]) + 1
        state["max_seconds"] = max(float(state["max_seconds"]), run.seconds)
        if int(state["runs"]) % 500 == 0:
            save()

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        if seed % 3 == 0:
            return mutate(data, random.Random(seed))[:max_size]
        return bytes(atheris.Mutate(data, max_size))

    seeds = Path(tempfile.mkdtemp(prefix="crmdrop-fuzz-"))
    for n, raw in enumerate(_seeds()):
        (seeds / f"seed{n}").write_bytes(raw)
    libfuzzer = [
        sys.argv[0],
        str(seeds),
        f"-runs={args.runs}",
        f"-max_total_time={args.seconds}",
        "-max_len=65536",
        f"-rss_limit_mb={args.rss_limit_mb}",
        "-timeout=120",
        f"-artifact_prefix={args.stats.parent}/",
        "-print_final_stats=1",
    ]
    atheris.Setup(libfuzzer, one_input, custom_mutator=mutator)
    try:
        atheris.Fuzz()
    finally:
        save()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["plain", "atheris"], default="plain")
    parser.add_argument("--procs", type=int, default=2, help="plain: worker processes")
    parser.add_argument("--seed", type=int, default=11, help="plain: worker i uses seed*1000+i")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--stats", type=Path, default=OUT / "fuzz.json")
    args = parser.parse_args()
    args.stats.parent.mkdir(parents=True, exist_ok=True)
    if args.engine == "plain":
        sys.exit(run_plain(args))
    run_atheris(args)


if __name__ == "__main__":
    main()
