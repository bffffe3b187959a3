"""Each worker and its PostgreSQL backends held to a share of one core (Linux cgroups),
or kept on one core (CPU affinity), for `bench_filing.py --cpu-cap` and `--pin`.

Why: on a 2-core host one `crmdrop worker` and its backend together keep ≈ one core busy,
so two of them need the whole machine, beside the bench, PostgreSQL's WAL writer and the
kernel: their ratio to one then measures the host's core count, not whether workers get
in each other's way. Held to, say, 0.5 of a core each (as if each ran on a host of its
own, with cores to spare), one worker's rate and two workers' rate compare what the
issue asks: whether a second worker adds as much as the first (locks, the queue, the
WAL), not whether the machine has a third core. Pinned instead (worker n and its
backends on core n), nothing is held back; what changes is that the scheduler no
longer places a worker's backend on the core where the other worker runs: on this
kind, unpinned two-worker rounds left 7-22 % of the machine idle, pinned ones 1-3 %.

cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`), whichever is mounted and writable; the
bench needs root for it. A worker's process joins its group when started; its backends
(named by `PGAPPNAME`, which libpq reads) join when the bench first sees them in
`pg_stat_activity` (`adopt`). Everything goes back to the root group at `close`.
"""

from __future__ import annotations

import os
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

PERIOD_US = 20_000  # short, so a 1-second round is throttled smoothly, not in two lumps
APP_PREFIX = "crmdrop-bench-worker-"


def _hierarchy() -> tuple[Path, bool]:
    """The cpu controller's root directory, and whether it is cgroup v2."""
    unified = Path("/sys/fs/cgroup")
    controllers = unified / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        with suppress(OSError):  # the groups made below get the cpu controller too
            (unified / "cgroup.subtree_control").write_text("+cpu")
        return unified, True
    v1 = unified / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, False
    raise RuntimeError("no cgroup cpu controller mounted: --cpu-cap needs one (and root)")


@dataclass
class CpuCaps:
    """One group per worker, each allowed `share` of one core (None: no limit); with
    `pin`, each group's processes also kept on one core (worker n on core n mod cores)."""

    share: float | None
    root: Path
    v2: bool
    pin: bool = False
    groups: dict[int, Path] = field(default_factory=dict)
    adopted: set[int] = field(default_factory=set)

    @classmethod
    def open(cls, share: float | None, *, pin: bool = False) -> CpuCaps:
        root, v2 = _hierarchy()
        return cls(share, root, v2, pin)

    def _group(self, worker: int) -> Path:
        if worker not in self.groups:
            path = self.root / f"crmdrop-bench-{os.getpid()}-{worker}"
            path.mkdir(exist_ok=True)
            quota = -1 if self.share is None else int(self.share * PERIOD_US)
            if self.v2:
                (path / "cpu.max").write_text(f"{'max' if quota < 0 else quota} {PERIOD_US}")
            else:
                (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (path / "cpu.cfs_quota_us").write_text(str(quota))
            self.groups[worker] = path
        return self.groups[worker]

    @staticmethod
    def app_name(worker: int) -> str:
        """The `PGAPPNAME` of worker `worker`'s connections."""
        return f"{APP_PREFIX}{worker}"

    def add(self, worker: int, pid: int) -> None:
        """Process `pid` (all its threads) into worker `worker`'s group."""
        (self._group(worker) / "cgroup.procs").write_text(str(pid))
        if self.pin:
            os.sched_setaffinity(pid, {worker % (os.cpu_count() or 1)})
        self.adopted.add(pid)

    def adopt(self, pid: int, application_name: str | None) -> None:
        """A PostgreSQL backend seen in `pg_stat_activity`: into its worker's group."""
        if pid in self.adopted or not (application_name or "").startswith(APP_PREFIX):
            return
        worker = int(str(application_name).removeprefix(APP_PREFIX))
        with suppress(OSError):  # the backend ended meanwhile
            self.add(worker, pid)

    def report(self) -> str:
        """How often each group was held back: throttled periods of all, and members."""
        parts = []
        for worker, path in sorted(self.groups.items()):
            stat = dict(
                (k, int(v))
                for k, v in (line.split() for line in (path / "cpu.stat").read_text().splitlines())
            )
            members = len((path / "cgroup.procs").read_text().split())
            held = f"{stat.get('nr_throttled', 0)} of {stat.get('nr_periods', 0)} periods"
            parts.append(
                f"worker {worker}: {members} processes"
                + ("" if self.share is None else f", throttled in {held}")
            )
        cap = "no cap" if self.share is None else f"cap {self.share:g} of a core each"
        return f"{cap}{', pinned' if self.pin else ''}; " + "; ".join(parts)

    def close(self) -> None:
        """Every process back in the root group, the groups removed."""
        for path in self.groups.values():
            for _ in range(50):  # a backend still exiting may be listed for a moment
                for pid in (path / "cgroup.procs").read_text().split():
                    with suppress(OSError):  # ended meanwhile
                        (self.root / "cgroup.procs").write_text(pid)
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        self.groups.clear()
        self.adopted.clear()
