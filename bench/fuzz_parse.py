"""Fuzz `parse_message` and `decide` with atheris (libFuzzer, coverage-guided), seeded with
the shared corpora; inputs are mutated by libFuzzer and by splices of known-hostile
fragments (`tests/fuzzing.py`).

    .venv/bin/python bench/fuzz_parse.py [--runs N] [--seconds S] [--stats FILE]

Every input must parse without our exception, without the parser's empty fallback, in
under one second, and memory stays bounded (libFuzzer's -rss_limit_mb). A failure stops
the run and leaves the input in bench/out/. Counts go to --stats (JSON) every 500 runs,
so a run stopped at any time still reports its true count. Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["crmdrop"]):
    from tests.fuzzing import SLOW_SECONDS, check_message, mutate

from corpora_util import iter_corpus_emails  # noqa: E402

STATE = {"runs": 0, "slow": 0, "max_seconds": 0.0, "started": time.time(), "max_rss_mb": 0.0}
_RNG = random.Random(11)


def _save(stats: Path) -> None:
    STATE["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    STATE["elapsed"] = time.time() - STATE["started"]
    stats.write_text(json.dumps(STATE, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--stats", type=Path, default=ROOT / "bench" / "out" / "fuzz.json")
    args = parser.parse_args()
    args.stats.parent.mkdir(parents=True, exist_ok=True)
    seeds = Path(tempfile.mkdtemp(prefix="crmdrop-fuzz-"))
    for n, (_path, raw) in enumerate(iter_corpus_emails()):
        (seeds / f"seed{n}").write_bytes(raw[:65536])

    def one_input(data: bytes) -> None:
        run = check_message(data, len(data), limit=0)
        if run.seconds > SLOW_SECONDS:
            # A shared 2-core machine stalls now and then: time it twice more, and only
            # if every try is slow is it a slow message (kept in bench/out/).
            retimed = min(check_message(data, len(data), limit=0).seconds for _ in range(2))
            if retimed > SLOW_SECONDS:
                STATE["slow"] = int(STATE["slow"]) + 1
                (args.stats.parent / f"slow-{STATE['runs']}.eml").write_bytes(data)
        STATE["runs"] = int(STATE["runs"]) + 1
        STATE["max_seconds"] = max(float(STATE["max_seconds"]), run.seconds)
        if int(STATE["runs"]) % 500 == 0:
            _save(args.stats)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        if seed % 3 == 0:
            return mutate(data, random.Random(seed))[:max_size]
        return bytes(atheris.Mutate(data, max_size))

    libfuzzer = [
        sys.argv[0],
        str(seeds),
        f"-runs={args.runs}",
        f"-max_total_time={args.seconds}",
        "-max_len=65536",
        "-rss_limit_mb=2048",
        "-timeout=120",
        f"-artifact_prefix={args.stats.parent}/",
        "-print_final_stats=1",
    ]
    atheris.Setup(libfuzzer, one_input, custom_mutator=mutator)
    try:
        atheris.Fuzz()
    finally:
        _save(args.stats)


if __name__ == "__main__":
    main()
