"""A second process that parses the worker's next batch while this one is filed (SQLite).

On SQLite one worker files everything, and parsing was 0.8 of its 2.0 ms of CPU per
filing (session 11) while the machine's other core sat idle. When the queue holds more
than a batch, the worker claims the next batch before it files this one and hands its
messages to this process (`python -m crmdrop.parseahead`, spoken to over its stdin and
stdout: a pickled list of messages in, a pickled list of `ChildParse` out, one batch at
a time). Pickling a parsed 5 KB message both ways costs ≈ 0.1 ms. PostgreSQL's workers
grow by adding workers instead, each parsing its own batches.

A message over `CHILD_MAX_BYTES` is parsed by the worker itself (its bytes would be held
in both processes). A parse that raises in the child comes back as its traceback. If the
child dies or answers nonsense, the worker parses the batch itself and starts a new
child for the next one.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import IO

from crmdrop.mail.dates import warm_date_tables
from crmdrop.mail.model import ParsedMessage
from crmdrop.mail.parse import parse_message

log = logging.getLogger(__name__)

CHILD_MAX_BYTES = 1 << 20  # larger messages are parsed in the worker


@dataclass(frozen=True)
class ChildParse:
    """One message as the child parsed it: the message, or the traceback of its error."""

    message: ParsedMessage | None
    seconds: float  # the parse's own time: the delivery's time budget counts it
    error: str = ""
    summary: str = ""  # the error's last line, for the processing record


def parse_batch(raws: list[bytes]) -> list[ChildParse]:
    """Parse each message on its own: one that fails does not fail the others."""
    out: list[ChildParse] = []
    for raw in raws:
        started = time.monotonic()
        try:
            out.append(ChildParse(parse_message(raw), time.monotonic() - started))
        except Exception as exc:
            spent = time.monotonic() - started
            out.append(ChildParse(None, spent, traceback.format_exc(), error_summary(exc)))
    return out


def error_summary(exc: BaseException) -> str:
    """An error's one line for the processing record (the worker's failures use it too)."""
    return traceback.format_exception_only(exc)[-1].strip().splitlines()[0]


class ParseProcess:
    """The child process, started with the worker (`start`) or when first needed; at most
    one batch in it at a time."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self._waiting = False

    def submit(self, raws: list[bytes]) -> bool:
        """Hand a batch to the child; False if it could not take it (then parse here)."""
        assert not self._waiting, "one batch at a time"
        try:
            child = self._started()
            assert child.stdin is not None
            pickle.dump(raws, child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.flush()
        except Exception as exc:  # any: a half-written batch would desynchronise the pipe
            log.warning("the parse process did not take a batch (%r): parsing here", exc)
            self.close()
            return False
        self._waiting = True
        return True

    def result(self) -> list[ChildParse] | None:
        """The submitted batch, parsed; None if the child died meanwhile (it is stopped,
        and the next `submit` starts another)."""
        assert self._waiting and self._child is not None and self._child.stdout is not None
        self._waiting = False
        try:
            found = pickle.load(self._child.stdout)
        except Exception as exc:  # any: a half-read answer would desynchronise the pipe
            log.warning("the parse process failed (%r): parsing its batch here", exc)
            self.close()
            return None
        return list(found)

    def start(self) -> None:
        """Start the child now (the worker does at its own start), so that the first
        burst does not wait for its imports (≈ 0.5 s)."""
        self._started()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._child is None or self._child.poll() is not None:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "crmdrop.parseahead"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        return self._child

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def close(self) -> None:
        """Stop the child: its stdin closed, it ends; killed if it does not, or at once
        if it holds a batch (whose answer nobody will read)."""
        child, busy = self._child, self._waiting
        self._child, self._waiting = None, False
        if child is None:
            return
        if busy:
            child.kill()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: a batch in, its parses out, until its stdin closes."""
    warm_date_tables()  # as the worker does at its start: no batch waits for them
    while True:
        try:
            raws = pickle.load(stdin)
        except EOFError:
            return
        pickle.dump(parse_batch(raws), stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


if __name__ == "__main__":
    # Through the module's own name: what the child pickles must unpickle in the worker
    # as `crmdrop.parseahead.ChildParse`, not as a class of `__main__`.
    from crmdrop import parseahead

    parseahead.serve(sys.stdin.buffer, sys.stdout.buffer)
