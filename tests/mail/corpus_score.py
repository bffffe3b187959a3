"""Score crmdrop's forwarded/quoted-block reading against the shared corpora's expectations.

For each corpus an *item* is one expectation about who wrote the original (forwarded
or quoted) message and to whom; an item is right when our parse agrees. Expectations
are read from the corpus's own files (expected.json, embedded/, elided/ …), never from
our parser: where a corpus gives only the reply text, the expected author is the first
address written in the text that follows it (the quote header), found with a plain
regex. Items whose expectation is a name without an address are scored on the name.

Used by `test_corpus_score.py` (asserts ≥ 98 %) and `bench/bench_parse.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from corpora_util import corpora_dir
from crmdrop.mail.forwarded import (
    find_forwarded_blocks,
    find_forwarded_blocks_html,
)
from crmdrop.mail.model import ForwardedBlock, Mailbox
from crmdrop.mail.parse import parse_message

_SIG_START = re.compile(r"(?:--|__)\s*\n")
_ADDR = re.compile(r"[\w.+'%-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass
class CorpusScore:
    name: str
    right: int = 0
    total: int = 0
    misses: list[str] = field(default_factory=list)

    def check(self, ok: bool, label: str) -> None:
        self.total += 1
        if ok:
            self.right += 1
        else:
            self.misses.append(label)

    @property
    def percent(self) -> float:
        return 100.0 * self.right / self.total if self.total else 100.0


def _addrs(text: str | None) -> set[str]:
    return {a.lower() for a in _ADDR.findall(text or "")}


def _first_addr(text: str, lines: int = 6) -> str | None:
    """The first address in the first `lines` non-blank lines of `text`."""
    seen = 0
    for ln in text.splitlines():
        if not ln.strip() or ln.strip(" >") == "":
            continue
        m = _ADDR.search(ln)
        if m:
            return m.group(0).lower()
        seen += 1
        if seen >= lines:
            break
    return None


_TO_LABEL = re.compile(
    r"^[\s>*]*(?:to|an|à|a|para|aan|till|til|do|komu|кому|kime|címzett|宛先|收件人)\s*:",
    re.IGNORECASE,
)


def _first_party(text: str, lines: int = 6) -> tuple[str, str] | None:
    """("from" | "to", address) for the first address in the header lines of `text`."""
    seen = 0
    for ln in text.splitlines():
        if not ln.strip(" >"):
            continue
        m = _ADDR.search(ln)
        if m:
            return ("to" if _TO_LABEL.match(ln) else "from"), m.group(0).lower()
        seen += 1
        if seen >= lines:
            break
    return None


def _author_block(blocks: list[ForwardedBlock]) -> ForwardedBlock | None:
    """The first block that names an author (a bare separator names nobody)."""
    return next((b for b in blocks if b.from_ is not None or b.to), None)


def _party_ok(blocks: list[ForwardedBlock], want: tuple[str, str]) -> bool:
    blk = _author_block(blocks)
    if blk is None:
        return False
    role, addr = want
    if role == "to":
        return addr in _mbs(blk.to)
    return _mb_addr(blk.from_) == addr


def _mb_addr(mb: Mailbox | None) -> str | None:
    return mb.address if mb is not None else None


def _mbs(mbs: tuple[Mailbox, ...]) -> set[str]:
    return {m.address for m in mbs if m.address}


def _block_matches(block: ForwardedBlock | None, exp: dict[str, object]) -> bool:
    if block is None:
        return False
    exp_from = str(exp.get("from") or "")
    if exp_from:
        want = _addrs(exp_from)
        if want:
            if _mb_addr(block.from_) not in want:
                return False
        else:  # a name only: the name must be kept, no address invented
            if block.from_ is None or block.from_.address is not None:
                return False
            if block.from_.name.strip('"') != exp_from.strip('"'):
                return False
    for key, got in (("to", block.to), ("cc", block.cc)):
        if key in exp and _addrs(str(exp[key])) != _mbs(got):
            return False
    return True


def _normalize_ws(text: str) -> str:
    return " ".join(text.split())


def _remainder(full: str, reply: str) -> str | None:
    """The text following `reply` in `full` (whitespace-insensitive), or None."""
    reply_n = _normalize_ws(reply)
    if not reply_n:
        return None
    # walk `full` until the normalized prefix covers the reply
    acc = []
    for idx, ch in enumerate(full):
        acc.append(ch)
        if not ch.isspace() and len(_normalize_ws("".join(acc))) >= len(reply_n):
            return full[idx + 1 :]
    return None


def blocks_start_below_text(text: str) -> bool:
    """True when some non-quoted text precedes the first block (a message of its own)."""
    blocks = find_forwarded_blocks(text)
    if not blocks:
        return True
    above = text.replace("\r\n", "\n").split("\n")[: blocks[0].line]
    return any(ln.strip() and not ln.lstrip().startswith(">") for ln in above)


# --- corpora ---------------------------------------------------------------------------


def score_quotequail(base: Path) -> CorpusScore:
    sc = CorpusScore("quotequail")
    data = json.loads((base / "expected.json").read_text())
    for case in data["cases"]["test_unwrap"]:
        exp = case.get("expected")
        blocks = find_forwarded_blocks(case["text"])
        first = blocks[0] if blocks else None
        label = f"test_unwrap: {case['text'][:40]!r}"
        if exp is None or exp.get("type") == "quote" or "from" not in exp:
            # no author expected: we must not invent one
            sc.check(first is None or first.from_ is None or "from" not in (exp or {}), label)
            continue
        sc.check(_block_matches(first, exp), label)
    for case in data["cases"]["test_unwrap_html"]:
        exp = case.get("expected")
        if "html" in case:
            html = case["html"]
        else:
            html = (base / "tests" / "files" / case["file"]).read_text(encoding="utf-8")
        blocks = find_forwarded_blocks_html(html)
        first = blocks[0] if blocks else None
        label = f"test_unwrap_html: {case.get('file') or html[:40]!r}"
        if exp is None:
            sc.check(first is None, label)
        else:
            sc.check(_block_matches(first, exp), label)
    for case in data["cases"]["file_based_manual"]:
        exp = case.get("expected") or case.get("expected_subset") or {}
        html = (base / "tests" / "files" / case["file"]).read_text(encoding="utf-8")
        blocks = find_forwarded_blocks_html(html)
        sc.check(_block_matches(blocks[0] if blocks else None, exp), f"file {case['file']}")
    return sc


def score_discourse(base: Path) -> CorpusScore:
    """embedded/ gives forwarded blocks verbatim; elided/ gives the quoted part of replies."""
    sc = CorpusScore("discourse-email-reply-trimmer")
    test = base / "test"
    for path in sorted((test / "embedded").glob("*.txt")):
        email_text = (test / "emails" / path.name).read_text(encoding="utf-8")
        first_line = next(ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
        blocks = find_forwarded_blocks(email_text)
        m = _ADDR.search(first_line)
        if m:
            want = m.group(0).lower()
            ok = want in {_mb_addr(b.from_) for b in blocks}
        else:  # the author line names a person without an address: keep the name only
            want = first_line.split(":", 1)[-1].strip(" *")
            ok = any(
                b.from_ is not None and b.from_.address is None and b.from_.name == want
                for b in blocks
            )
        sc.check(ok, f"embedded/{path.name}: author {want}")
    embedded = {p.name for p in (test / "embedded").glob("*.txt")}
    for path in sorted((test / "elided").glob("*.txt")):
        if path.name in embedded:
            continue
        elided = path.read_text(encoding="utf-8")
        if _SIG_START.match(elided.lstrip("\n")):
            continue  # only a signature was elided
        want = _first_party(elided, lines=3)
        if want is None:
            continue
        email_text = (test / "emails" / path.name).read_text(encoding="utf-8")
        blocks = find_forwarded_blocks(email_text)
        sc.check(_party_ok(blocks, want), f"elided/{path.name}: {want[0]} {want[1]}")
    return sc


def score_talon(base: Path) -> CorpusScore:
    sc = CorpusScore("talon")
    data = json.loads((base / "text_quotations_cases.json").read_text())
    for case in data["cases"]:
        text, reply = case["input"], case.get("expected_reply")
        if not isinstance(reply, str):
            continue
        rest = _remainder(text, reply) if reply.strip() else text
        if rest is None:
            continue
        want = _first_party(rest, lines=4)
        if want is None:
            continue
        blocks = find_forwarded_blocks(text)
        sc.check(_party_ok(blocks, want), f"{case['test']}: {want[0]} {want[1]}")
    expected = json.loads((base / "expected.json").read_text())
    folder = base / "tests" / "fixtures" / "standard_replies"
    for name, reply in expected["standard_replies"].items():
        parsed = parse_message((folder / name).read_bytes())
        rest = _remainder(parsed.text, reply)
        want = _first_party(rest, lines=4) if rest else None
        if want is None:
            continue
        sc.check(_party_ok(parsed.forwarded, want), f"standard_replies/{name}: {want}")
    return sc


def score_mail_parser_reply(base: Path) -> CorpusScore:
    sc = CorpusScore("mail-parser-reply")
    data = json.loads((base / "expected.json").read_text())
    seen: set[str] = set()
    for case in data["cases"]:
        fname = case["file"]
        text = (base / "test" / "emails" / fname).read_text(encoding="utf-8")
        blocks = find_forwarded_blocks(text)
        # A thread whose text starts with a header block has no message above it.
        messages = len(blocks) + (1 if blocks_start_below_text(text) else 0)
        for check in case["checks"]:
            if "reply_count" in check and fname not in seen:
                n = int(check["reply_count"])
                sc.check(messages == n, f"{fname}: {n} messages (got {messages})")
            fld = str(check.get("field", ""))
            m = re.match(r"replies\[(\d+)\]\.headers", fld)
            if m and "contains" in check and fname not in seen:
                idx = int(m.group(1))
                want = _addrs(str(check["contains"]))
                if not want:
                    continue
                blk = blocks[idx - 1] if 0 < idx <= len(blocks) else None
                sc.check(
                    blk is not None and _mb_addr(blk.from_) in want,
                    f"{fname}: reply {idx} author {want}",
                )
        seen.add(fname)
    return sc


def score_crisp(base: Path) -> CorpusScore:
    sc = CorpusScore("crisp-email-reply-parser")
    data = json.loads((base / "expected.json").read_text())
    common = data["_COMMON_FIRST_FRAGMENT"]
    for fname, exp in data["cases"].items():
        path = base / "test" / "fixtures" / fname
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        blocks = find_forwarded_blocks(text)
        first = exp.get("first_fragment_trimmed") or exp.get("first_fragment")
        if first == "COMMON":
            first = common
        if exp.get("fragment_count") == 1 or exp.get("quoted") == [False]:
            # the whole text is the reply: no quoted author may be found
            sc.check(all(b.from_ is None for b in blocks), f"{fname}: no quote header")
            continue
        if isinstance(first, str):
            rest = _remainder(text, first)
            if rest is None or _SIG_START.match(rest.lstrip("\n")):
                continue  # what follows is a signature, not a quote header
            want = _first_party(rest, lines=4)
            if want is None:
                continue
            sc.check(_party_ok(blocks, want), f"{fname}: {want[0]} {want[1]}")
    return sc


def score_imap_tools(base: Path) -> CorpusScore:
    """Header addresses (From/To/Cc) against what the stdlib-based imap_tools read."""
    sc = CorpusScore("imap-tools")
    data = json.loads((base / "expected.json").read_text())
    for rel, exp in data["cases"].items():
        path = base / "tests" / "messages" / rel
        if not path.is_file():
            continue
        parsed = parse_message(path.read_bytes())
        fv = exp.get("from_values")
        # imap_tools' from_ is the first From mailbox only
        want_from = {fv["email"].lower()} if isinstance(fv, dict) and fv.get("email") else set()
        want_to = {v["email"].lower() for v in exp.get("to_values") or [] if v.get("email")}
        want_cc = {v["email"].lower() for v in exp.get("cc_values") or [] if v.get("email")}
        got_from = {m.address for m in parsed.from_[:1] if m.address}
        got_to = {m.address for m in parsed.to if m.address}
        got_cc = {m.address for m in parsed.cc if m.address}
        ok = (want_from, want_to, want_cc) == (got_from, got_to, got_cc)
        sc.check(
            ok,
            f"{rel}: from/to/cc {want_from}/{want_to}/{want_cc} got {got_from}/{got_to}/{got_cc}",
        )
    return sc


SCORERS: dict[str, Callable[[Path], CorpusScore]] = {
    "quotequail": score_quotequail,
    "discourse-email-reply-trimmer": score_discourse,
    "talon": score_talon,
    "mail-parser-reply": score_mail_parser_reply,
    "crisp-email-reply-parser": score_crisp,
    "imap-tools": score_imap_tools,
}


def score_all(root: Path | None = None) -> Iterator[CorpusScore]:
    base = root or corpora_dir()
    for name, fn in SCORERS.items():
        yield fn(base / name)
