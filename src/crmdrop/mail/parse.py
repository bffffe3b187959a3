"""bytes → ParsedMessage: the one entry point of `mail/`. Never raises.

Speed matters (the pipeline files ≥ 200 messages/s): the MIME tree is read with the
``compat32`` policy (``policy.default`` re-parses Content-Type many times per message),
each header is decoded once by our own tolerant decoders, and HTML is converted to
text only when the message has no plain-text alternative.
"""

from __future__ import annotations

import binascii
import email
import email.message
import email.utils
import hashlib
import re
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.message import Message

from crmdrop.mail.addresses import (
    MAX_TEXT_ADDRESSES,
    extract_addresses_from_text,
    is_plausible_address,
    normalize_address,
    parse_address_list,
)
from crmdrop.mail.encoding import decode_bytes, decode_header_str
from crmdrop.mail.forwarded import MAX_BLOCKS, split_own_text
from crmdrop.mail.headers import ADDRESS_HEADERS, clean_message_id, parse_id_list
from crmdrop.mail.html import html_to_text, mailto_addresses
from crmdrop.mail.model import Attachment, ForwardedBlock, FoundAddress, Mailbox, ParsedMessage
from crmdrop.mail.payload import EncodedPayload
from crmdrop.mail.rewrite import message_bytes
from crmdrop.mail.tnef import is_tnef, read_tnef

__all__ = ["parse_message"]

_MAX_DEPTH = 8  # attached messages within attached messages
# MIME parts nested deeper than this are cut before the stdlib parser sees them: it
# recurses once per level and hits RecursionError near 1,000. (`walk` stops there too.)
MAX_MIME_NESTING = 50


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one message. Problems go to `defects`; whatever can be read is returned.

    Never raises. Should our own code fail all the same, the result is empty and says
    so in `failure`: a caller must not take it for a message without headers.
    """
    try:
        cut, defect = cap_mime_nesting(raw)
        digest = hashlib.sha256(raw).hexdigest()
        skeleton, cuts = cut_base64_runs(cut, digest)
        token = _CUTS.set(cuts)
        try:
            parsed = _parse(skeleton, 0, digest)
        finally:
            _CUTS.reset(token)
        if defect:
            parsed.defects.insert(0, defect)
        return parsed
    except Exception as exc:  # last line of defence: a bug of ours, not the sender's
        failure = f"parse failed: {exc.__class__.__name__}: {exc}"[:300]
        parsed = _empty(raw, failure)
        parsed.failure = failure
        return parsed


_NESTING_HINT = re.compile(rb"(?im)^content-type:[ \t]*(?:multipart|message)/")
_BOUNDARY = re.compile(rb'(?i)boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;"]{1,200}))')


_SCAN = 1024 * 1024


def _count_any_case(raw: bytes, needle: bytes) -> int:
    """Occurrences of `needle` (lower case) in `raw`, in any case, lowering a MiB at a
    time: `raw.lower()` would be a second copy of a 25 MB message. Each slice reaches
    into the next by one byte less than `needle`, so a match is counted once, where it
    starts."""
    reach = _SCAN + len(needle) - 1
    return sum(raw[i : i + reach].lower().count(needle) for i in range(0, len(raw), _SCAN))


def cap_mime_nesting(raw: bytes, limit: int = MAX_MIME_NESTING) -> tuple[bytes, str | None]:
    """`raw` with MIME parts nested deeper than `limit` left out, and a defect saying so.

    Cheap for ordinary mail (one regex count); otherwise one pass over the lines that
    follows the boundaries: a part opened below `limit` is kept, deeper lines are dropped
    until their enclosing boundary closes.
    """
    # Every hint is a "content-type:" in some case: counting those is a fast first bound.
    if _count_any_case(raw, b"content-type:") <= limit or len(_NESTING_HINT.findall(raw)) <= limit:
        return raw, None
    lines = raw.splitlines(keepends=True)
    stack: list[bytes | None] = []  # boundary of each open multipart; None: message/*
    kept: list[bytes] = []
    dropped = 0
    i = 0
    while i < len(lines):
        j = i + 1
        if _NESTING_HINT.match(lines[i]):
            while j < len(lines) and lines[j][:1] in (b" ", b"\t"):
                j += 1  # the folded rest of the Content-Type header
            header = b"".join(lines[i:j])
            m = _BOUNDARY.search(header)
            multipart = header.split(b":", 1)[1].strip().lower().startswith(b"multipart/")
            stack.append((m.group(1) or m.group(2)) if m and multipart else None)
            keep = len(stack) <= limit
        else:
            keep = len(stack) <= limit
            if lines[i].startswith(b"--"):
                _close(stack, lines[i].rstrip(b"\r\n"))
        if keep:
            kept.extend(lines[i:j])
        else:
            dropped += j - i
        i = j
    return b"".join(kept), f"MIME nesting deeper than {limit}: {dropped} lines left out"


# Memory: the stdlib parser holds every part as `str` and decoding copies it again, so
# a 25 MB attachment costs a few times its size. In a message past `_CUT_FROM`, each run
# of base64 lines longer than `_CUT_MIN` is taken out before the parser sees it and a
# one-line token is left in its place; an attachment whose body is such a run is not
# decoded here but handed on as slices of `raw` (`EncodedPayload`), decoded in chunks
# where it is stored. Any other part with a token gets its text back before decoding,
# so what it reads is what the stdlib would read. The token carries the message's own
# hash: it cannot occur in the message by chance, and it is the same at every parse.
_CUT_FROM = 1024 * 1024
_CUT_MIN = 64 * 1024
_BASE64_RUN = re.compile(rb"(?m)^(?:[A-Za-z0-9+/]{40,998}+={0,2}+\r?\n)++")  # possessive: linear


@dataclass(frozen=True)
class _Cuts:
    """The runs taken out of one message, and how their tokens read in a payload."""

    runs: list[memoryview]
    token: re.Pattern[str]  # group 1: the run's index; group 2: its line end, if kept


_CUTS: ContextVar[_Cuts | None] = ContextVar("crmdrop_mail_cuts", default=None)


def cut_base64_runs(raw: bytes, digest: str) -> tuple[bytes, _Cuts | None]:
    """`raw` with its long base64 runs replaced by tokens, and the runs (slices of `raw`)."""
    if len(raw) < _CUT_FROM:
        return raw, None
    prefix = f"crmdropcut{digest[:16]}x"
    view = memoryview(raw)
    runs: list[memoryview] = []
    pieces: list[bytes | memoryview] = []
    last = 0
    for found in _BASE64_RUN.finditer(raw):
        start, end = found.span()
        if end - start < _CUT_MIN:
            continue
        line_end = b"\r\n" if raw[end - 2 : end] == b"\r\n" else b"\n"
        pieces += [view[last:start], f"{prefix}{len(runs)}".encode("ascii") + line_end]
        runs.append(view[start:end])
        last = end
    if not runs:
        return raw, None
    pieces.append(view[last:])
    return b"".join(pieces), _Cuts(runs, re.compile(re.escape(prefix) + r"(\d+)(\r?\n)?"))


def _has_cut(part: Message) -> tuple[_Cuts, str] | None:
    """The cuts and the payload of `part`, if it holds a token. The payload as stored
    (`_payload`): `get_payload()` would decode 8-bit text by its charset, and raise
    for a charset that is no text charset."""
    cuts = _CUTS.get()
    payload = getattr(part, "_payload", None) if cuts is not None else None
    if cuts is None or not isinstance(payload, str) or cuts.token.search(payload) is None:
        return None
    return cuts, payload


def _restore(part: Message) -> None:
    """Put the runs back into the payload of `part` (to be decoded the ordinary way)."""
    found = _has_cut(part)
    if found is None:
        return
    cuts, payload = found

    def text(match: re.Match[str]) -> str:
        run = bytes(cuts.runs[int(match.group(1))]).decode("ascii")
        if match.group(2):
            return run
        return run[:-2] if run.endswith("\r\n") else run[:-1]  # the parser took the line end

    part.set_payload(cuts.token.sub(text, payload))


def _encoded_payload(part: Message) -> EncodedPayload | None:
    """The base64 body of `part` left in the raw message, if runs were cut from it."""
    found = _has_cut(part)
    cte = (_hget(part, "Content-Transfer-Encoding") or "").strip().lower()
    if found is None or cte != "base64":
        return None
    cuts, payload = found
    pieces: list[bytes | memoryview] = []
    at = 0
    for match in cuts.token.finditer(payload):
        pieces += [payload[at : match.start()].encode("ascii", "surrogateescape")]
        pieces.append(cuts.runs[int(match.group(1))])
        at = match.end()
    pieces.append(payload[at:].encode("ascii", "surrogateescape"))
    try:
        return EncodedPayload.read(tuple(pieces))
    except (binascii.Error, ValueError):
        return None  # broken base64: the stdlib's repairs apply (`_restore`, then decode)


def _close(stack: list[bytes | None], mark: bytes) -> None:
    """A closing boundary line ends its multipart and every part opened inside it."""
    for depth in range(len(stack) - 1, -1, -1):
        boundary = stack[depth]
        if boundary is not None and mark == b"--" + boundary + b"--":
            del stack[depth:]
            return


def _empty(raw: bytes, defect: str) -> ParsedMessage:
    return ParsedMessage(
        message_id=None,
        in_reply_to=[],
        references=[],
        subject="",
        date=None,
        from_=[],
        sender=[],
        reply_to=[],
        to=[],
        cc=[],
        headers={},
        text="",
        html=None,
        own_text="",
        forwarded=[],
        attachments=[],
        attached=[],
        addresses=[],
        defects=[defect],
        content_hash=hashlib.sha256(raw).hexdigest(),
    )


def _parse(raw: bytes, depth: int, digest: str | None = None) -> ParsedMessage:
    """`raw` parsed; its content hash is `digest` when the caller has it (the whole
    message's, also when `raw` is its skeleton), else the hash of `raw`."""
    msg = email.message_from_bytes(raw, policy=email_policy.compat32)
    result = _from_message(msg, depth)
    result.content_hash = digest if digest is not None else hashlib.sha256(raw).hexdigest()
    return result


def _date(value: str | None, defects: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append(f"unparseable Date: {value[:80]!r}")
        return None


def _hget(part: Message, name: str) -> str | None:
    """A header's raw value as str (compat32 may hand back a Header object for 8-bit)."""
    lname = name.lower()
    for k, v in part.raw_items():
        if k.lower() == lname:
            return v if isinstance(v, str) else str(v)
    return None


def _filename(part: Message) -> str | None:
    """The attachment's filename (RFC 2231, RFC 2047 and raw 8-bit UTF-8 all handled)."""
    raw_values = [_hget(part, "Content-Disposition"), _hget(part, "Content-Type")]
    if not any(v and "name" in v.lower() for v in raw_values):
        return None  # no filename= or name= parameter (RFC 2231 forms included): body parts
    if any(v and any("\udc80" <= ch <= "\udcff" for ch in v) for v in raw_values):
        clean = Message()
        for hname, value in zip(("Content-Disposition", "Content-Type"), raw_values, strict=True):
            if value:
                clean[hname] = decode_header_str(value, rfc2047=False)
        part = clean
    name = part.get_filename()
    return decode_header_str(name) if isinstance(name, str) else None


class _Collector:
    """Accumulates body parts and attachments while walking the MIME tree."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments: list[Attachment] = []
        self.attached: list[ParsedMessage] = []
        self.defects: list[str] = []

    def walk(self, part: Message, level: int = 0) -> None:
        if level > MAX_MIME_NESTING:
            self.defects.append("MIME nesting too deep")
            return
        for d in getattr(part, "defects", []):
            self.defects.append(d.__class__.__name__)
        ctype = part.get_content_type()
        if ctype == "message/rfc822" or ctype == "message/global":
            self._attached_message(part)
            return
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                for sub in payload:
                    if isinstance(sub, Message):
                        self.walk(sub, level + 1)
            return
        self._leaf(part, ctype)

    def _attached_message(self, part: Message) -> None:
        if self.depth >= _MAX_DEPTH:
            self.defects.append("attached messages nested too deep")
            return
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            inner = payload[0]
            try:
                sub = _from_message(inner, self.depth + 1)
                sub.content_hash = hashlib.sha256(message_bytes(inner)).hexdigest()
            except Exception as exc:
                self.defects.append(f"attached message unreadable: {exc.__class__.__name__}")
                return
            self.attached.append(sub)
            return
        _restore(part)
        data = part.get_payload(decode=True)
        if isinstance(data, bytes) and data.strip():
            self.attached.append(_parse(data, self.depth + 1))

    def _leaf(self, part: Message, ctype: str) -> None:
        try:
            filename = _filename(part)
        except Exception:
            filename = None
            self.defects.append("bad filename parameter")
        disposition = (_hget(part, "Content-Disposition") or "").split(";", 1)[0].strip().lower()
        is_attachment = disposition == "attachment" or (
            filename is not None and disposition != "inline"
        )
        if self._streamed(part, ctype, filename, is_attachment):
            return
        _restore(part)
        try:
            data = part.get_payload(decode=True)
        except Exception:
            data = None
            self.defects.append("undecodable payload")
        if not isinstance(data, bytes):
            data = b""
        if ctype in ("text/plain", "text/html") and not is_attachment:
            charset = part.get_content_charset()
            text, defect = decode_bytes(data, charset)
            if defect:
                self.defects.append(defect)
            (self.plain if ctype == "text/plain" else self.html).append(text)
            return
        if is_tnef(ctype, filename, data):
            content = read_tnef(data)
            self.defects.extend(content.defects)
            if content.text:
                self.plain.append(content.text)
            elif content.html:
                self.html.append(content.html)
            self.attachments.extend(content.attachments)
            if not (content.text or content.html or content.attachments):
                if not content.defects:
                    self.defects.append("TNEF without body or attachments")
                self.attachments.append(Attachment(filename or "winmail.dat", ctype, data))
            return
        if ctype == "multipart" or ctype.startswith("multipart/"):
            return  # an empty multipart leaf: nothing to keep
        self.attachments.append(
            Attachment(filename or "", ctype, data, content_id=_content_id(part))
        )

    def _streamed(
        self, part: Message, ctype: str, filename: str | None, is_attachment: bool
    ) -> bool:
        """Keep a large base64 file as it lies in the raw message (see `_CUT_FROM`): not
        a body text, not TNEF (both read here), not a multipart."""
        if ctype in ("text/plain", "text/html") and not is_attachment:
            return False
        if is_tnef(ctype, filename, b"") or (filename or "").lower() == "winmail.dat":
            return False
        if ctype == "multipart" or ctype.startswith("multipart/"):
            return False
        source = _encoded_payload(part)
        if source is None:
            return False
        attachment = Attachment(
            filename or "", ctype, b"", content_id=_content_id(part), source=source
        )
        self.attachments.append(attachment)
        return True


def _content_id(part: Message) -> str | None:
    cid = _hget(part, "Content-ID")
    return clean_message_id(decode_header_str(cid)) if cid else None


def _from_message(msg: Message, depth: int) -> ParsedMessage:
    defects: list[str] = []
    headers, address_values = _read_headers(msg)
    first = {k: v[0] for k, v in headers.items() if v}
    subject = first.get("subject", "")
    col = _Collector(depth)
    col.walk(msg)
    defects.extend(col.defects)

    html = "\n".join(col.html) if col.html else None
    text, text_from_html = _body_text(col.plain, html)
    own_text, forwarded = split_own_text(text, subject)
    addr_mailboxes = {
        key: [mb for v in values for mb in parse_address_list(v)]
        for key, values in address_values.items()
    }
    found = _found_addresses(addr_mailboxes, forwarded, text, text_from_html, html, col.attached)
    defects.extend(_budget_defects(found, forwarded))
    return ParsedMessage(
        message_id=clean_message_id(first.get("message-id")),
        in_reply_to=parse_id_list(first.get("in-reply-to")),
        references=parse_id_list(" ".join(headers.get("references", []))),
        subject=subject,
        date=_date(first.get("date"), defects),
        from_=addr_mailboxes.get("from", []),
        sender=addr_mailboxes.get("sender", []),
        reply_to=addr_mailboxes.get("reply-to", []),
        to=addr_mailboxes.get("to", []),
        cc=addr_mailboxes.get("cc", []),
        headers=headers,
        text=text,
        html=html,
        own_text=own_text,
        forwarded=forwarded,
        attachments=col.attachments,
        attached=col.attached,
        addresses=found,
        defects=defects,
    )


def _budget_defects(found: list[FoundAddress], forwarded: list[ForwardedBlock]) -> list[str]:
    """Say so when a budget stopped the reading (the rest of the message was not read)."""
    defects = []
    if sum(f.where.startswith("body:") for f in found) >= MAX_TEXT_ADDRESSES:
        defects.append(f"more than {MAX_TEXT_ADDRESSES} addresses in the body: the rest not read")
    if len(forwarded) >= MAX_BLOCKS:
        defects.append(f"more than {MAX_BLOCKS} forwarded or quoted blocks: the rest not read")
    return defects


def _read_headers(msg: Message) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Every header decoded, by lowercase name; and the address headers decoded without
    RFC 2047 (an encoded word may hide a comma or an address: it is decoded per mailbox)."""
    headers: dict[str, list[str]] = {}
    address_values: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        key = name.strip().lower()
        val = value if isinstance(value, str) else str(value)
        if key in ADDRESS_HEADERS:
            address_values.setdefault(key, []).append(decode_header_str(val, rfc2047=False))
        headers.setdefault(key, []).append(decode_header_str(val))
    return headers, address_values


def _body_text(plain: list[str], html: str | None) -> tuple[str, bool]:
    """The text to read (the plain parts, else the HTML as text), and whether from HTML."""
    if plain:
        text = "\n\n".join(t.strip("\n") for t in plain)
        from_html = False
    elif html is not None:
        text = html_to_text(html)
        from_html = True
    else:
        text = ""
        from_html = False
    return text.replace("\r\n", "\n").replace("\r", "\n"), from_html


def _found_addresses(
    addr_mailboxes: dict[str, list[Mailbox]],
    forwarded: list[ForwardedBlock],
    text: str,
    text_from_html: bool,
    html: str | None,
    attached: list[ParsedMessage],
) -> list[FoundAddress]:
    """Every address in the message with where it was seen, each (address, where) once:
    headers, forwarded blocks, the body, mailto links, attached messages."""
    found: list[FoundAddress] = []
    seen: set[tuple[str, str]] = set()

    def add(address: str | None, name: str, where: str) -> None:
        if not address:
            return
        key = (address, where)
        if key in seen:
            return
        seen.add(key)
        found.append(FoundAddress(address=address, name=name, where=where))

    for key in ADDRESS_HEADERS:
        for mb in addr_mailboxes.get(key, ()):
            add(mb.address, mb.name, f"header:{key}")
    for block in forwarded:
        prefix = f"forwarded[{block.depth}]"
        if block.from_ is not None:
            add(block.from_.address, block.from_.name, f"{prefix}:from")
        for mb in block.to:
            add(mb.address, mb.name, f"{prefix}:to")
        for mb in block.cc:
            add(mb.address, mb.name, f"{prefix}:cc")
    body_where = "body:html" if text_from_html else "body:text"
    for address, name in extract_addresses_from_text(text):
        add(address, name, body_where)
    if html is not None:
        for address, label in mailto_addresses(html):
            if is_plausible_address(address):
                add(normalize_address(address), "" if "@" in label else label, "body:html")
    for idx, sub in enumerate(attached, start=1):
        for fa in sub.addresses:
            add(fa.address, fa.name, f"attached[{idx}]:{fa.where}")
    return found
