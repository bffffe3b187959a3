"""Email addresses: the lookup key, plausibility, address lists and addresses in free text.

One parser for address lists serves both real headers and the header lines of inline
forwarded blocks, so ``Name <a@b<mailto:a@b>>``, ``a@b [mailto:a@b]``, ``"a@b" <a@b>``
and names with commas or quotes are read the same way everywhere. We do not rely on
``email.utils.getaddresses``: on Python 3.11.7 it lacks the CVE-2023-27043 fix and can
attribute an address to the wrong person.
"""

from __future__ import annotations

import contextlib
import html as html_lib
import re
import unicodedata
from functools import lru_cache
from urllib.parse import unquote

import email_validator
from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from email_validator.rfc_constants import DOMAIN_MAX_LENGTH, DOT_ATOM_TEXT, EMAIL_MAX_LENGTH

from crmdrop.mail.encoding import decode_rfc2047
from crmdrop.mail.model import Mailbox

__all__ = [
    "extract_addresses_from_text",
    "is_plausible_address",
    "normalize_address",
    "parse_address_list",
]


def _idna_to_unicode(domain: str) -> str:
    labels = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError, ValueError):
                label = label.encode("ascii").decode("idna")
        labels.append(label)
    return ".".join(labels)


@lru_cache(maxsize=65536)
def normalize_address(addr: str) -> str:
    """The key under which an address is looked up: one spelling per mailbox.

    Strips whitespace and angle brackets, lowercases the whole address (local parts
    are case-insensitive in practice) and puts the domain in its canonical form:
    **Unicode, NFC, lowercased** — a punycode label (``xn--bcher-kva``) is decoded to
    Unicode (``bücher``), so ``a@XN--BCHER-KVA.example`` and ``a@Bücher.example`` get
    the same key. A trailing dot on the domain is dropped.
    """
    a = addr.strip().strip("<>").strip()
    if a.lower().startswith("mailto:"):
        a = a[7:]
    at = a.rfind("@")
    if at < 0:
        return unicodedata.normalize("NFC", a).lower()
    local, domain = a[:at], a[at + 1 :].rstrip(".")
    domain = unicodedata.normalize("NFC", domain).lower()
    if "xn--" in domain:
        domain = unicodedata.normalize("NFC", _idna_to_unicode(domain)).lower()
    return unicodedata.normalize("NFC", local).lower() + "@" + domain


def normalize_domain(domain: str) -> str:
    """A bare domain (``@Acme.com``, ``xn--bcher-kva.example``) in the canonical form
    `normalize_address` gives the domain of an address."""
    return normalize_address("x@" + domain.strip().lstrip("@")).partition("@")[2]


_INTERNAL_TLDS = frozenset({"local", "internal", "lan", "corp", "home", "intranet"})


@lru_cache(maxsize=65536)
def is_plausible_address(addr: str) -> bool:
    """True when `addr` is a syntactically valid address (email-validator, no DNS).

    ``*.test`` and company-internal TLDs (``.local``, ``.internal`` …) count: they are
    real in test suites and in intranet mail; ``.invalid``/``.onion``/``localhost`` don't.
    """
    a = addr.strip()
    if not a or "@" not in a or len(a) > 320:
        return False
    error = _syntax_error(a)
    if error is None:
        return True
    # Internal domains (".local", ".internal", ".lan") are real in company mail.
    tld = a.rsplit(".", 1)[-1].lower()
    if "special-use" in error and tld in _INTERNAL_TLDS:
        return is_plausible_address(a[: -len(tld)] + "com")
    return False


def _verdict(a: str) -> ValidatedEmail | str:
    """email-validator's reading of `a`, or why it is not valid."""
    try:
        return validate_email(
            a, check_deliverability=False, allow_smtputf8=True, test_environment=True
        )
    except EmailNotValidError as exc:
        return str(exc)
    except (UnicodeError, ValueError):
        return "unreadable"


def _validate(a: str) -> str | None:
    """email-validator's verdict on `a`: None when valid, else why not."""
    verdict = _verdict(a)
    return verdict if isinstance(verdict, str) else None


_STUB_LOCAL = "a"


# A domain email-validator accepts as it is, lowercased (each step of its check passes:
# ASCII letters, digits and inner hyphens, labels of 1-63, a TLD of letters). Punycode and
# R-LDH labels ("ab--c") and special-use names go to the validator.
_PLAIN_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


def _plain_domain(domain: str) -> bool:
    if len(domain) > DOMAIN_MAX_LENGTH or "--" in domain or not _PLAIN_DOMAIN.fullmatch(domain):
        return False
    lower = domain.lower()
    special = (d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES if d != "test")
    return not any(lower == d or lower.endswith("." + d) for d in special)


@lru_cache(maxsize=16384)
def _domain_forms(domain: str) -> tuple[str, ...] | str:
    """The forms email-validator gives `domain` (as written, Unicode, IDNA ASCII), or why
    an address at it is not valid: the verdict on a one-letter address at it."""
    if _plain_domain(domain):
        return (domain, domain.lower())
    ok = _verdict(f"{_STUB_LOCAL}@{domain}")
    return ok if isinstance(ok, str) else (domain, ok.domain, ok.ascii_domain)


def _syntax_error(a: str) -> str | None:
    """`_validate(a)`, with the domain's half of the work done once per domain.

    For an ASCII address with one "@" whose local part is a plain dot-atom, email-validator
    accepts the local part as it is, checks the domain on its own, then the length of the
    address in each of the domain's forms: so its verdict is the domain's verdict (a
    one-letter address fails only where every address at that domain fails too: a bad
    domain, or one too long for any address) and the length. Anything else (quotes,
    Unicode, a display name) goes to email-validator whole.
    """
    local, _, domain = a.partition("@")
    if not a.isascii() or "@" in domain or not DOT_ATOM_TEXT.match(local):
        return _validate(a)
    forms = _domain_forms(domain)
    if isinstance(forms, str):
        return forms
    if len(local) + 1 + max(len(f.encode("utf-8")) for f in forms) > EMAIL_MAX_LENGTH:
        return "The email address is too long."
    return None


# --- address lists -----------------------------------------------------------------

_MAILTO_TAIL = re.compile(r"\s*[\[<(]\s*mailto:[^\]>)]*[\]>)]\s*$", re.IGNORECASE)
_MAILTO_INNER = re.compile(r"<\s*mailto:([^<>]*)>", re.IGNORECASE)


def _mailto_inner(m: re.Match[str]) -> str:
    """``<mailto:a@b>`` right after the same address is noise; alone it is the address."""
    before = m.string[: m.start()].rstrip()
    inner = m.group(1).strip()
    if before.lower().endswith(inner.lower()) or before.endswith("<" + inner):
        return ""
    return f"<{inner}>"


_BARE_ADDR = re.compile(
    r"[A-Za-z0-9\u00c0-\uffff!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9\u00c0-\uffff-]+(?:\.[A-Za-z0-9\u00c0-\uffff-]+)+"
)
_ANGLE = re.compile(r"<([^<>]*)>")
_WS = re.compile(r"\s+")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_COMMENT = re.compile(r"\([^()]*\)")
_ROUTE = re.compile(r"^\s*@[^:<>]*:")


_NESTING = re.compile(r'["\\<>()\[\]]')


def split_address_list(value: str, seps: str = ",;") -> list[str]:
    """Split on commas and semicolons outside quotes, angle brackets, brackets and parens."""
    if not _NESTING.search(value):  # nothing to be inside of: a plain split
        pieces = [value]
        for sep in seps:
            pieces = [part for piece in pieces for part in piece.split(sep)]
        return [piece.strip() for piece in pieces if piece.strip()]
    out: list[str] = []
    buf: list[str] = []
    depth_angle = depth_paren = depth_square = 0
    in_quote = False
    escape = False
    for ch in value:
        if escape:
            buf.append(ch)
            escape = False
            continue
        if ch == "\\" and in_quote:
            buf.append(ch)
            escape = True
            continue
        if ch == '"':
            in_quote = not in_quote
        elif not in_quote:
            if ch == "<":
                depth_angle += 1
            elif ch == ">":
                depth_angle = max(0, depth_angle - 1)
            elif ch == "(":
                depth_paren += 1
            elif ch == ")":
                depth_paren = max(0, depth_paren - 1)
            elif ch == "[":
                depth_square += 1
            elif ch == "]":
                depth_square = max(0, depth_square - 1)
            elif ch in seps and not (depth_angle or depth_paren or depth_square):
                piece = "".join(buf).strip()
                if piece:
                    out.append(piece)
                buf = []
                continue
        buf.append(ch)
    piece = "".join(buf).strip()
    if piece:
        out.append(piece)
    return out


# Quote pairs around a display name in any script: "…", „…“, „…”, «…», “…”, 「…」, '…'.
_QUOTE_PAIRS = {
    '"': '"',
    "'": "'",
    "„": '“”"',
    "“": "”“",
    "«": "»",
    "‹": "›",
    "»": "«",
    "「": "」",
    "『": "』",
    "‚": "‘’",
    "‘": "’",
}


def _unquote_name(name: str) -> str:
    name = name.replace("\ufeff", "").strip().strip(":").strip()
    closing = _QUOTE_PAIRS.get(name[:1], "")
    if len(name) >= 2 and name[-1] in closing and name[0] in "\"'":
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    elif len(name) >= 2 and name[-1] in closing:
        name = name[1:-1].strip()
    elif name.count('"') == 1:
        name = name.replace('"', "")
    if "=?" in name:
        name = decode_rfc2047(name)
    return _WS.sub(" ", name).strip()


# Pieces longer than this are read each time (the cache would hold their text).
_CACHED_PIECE = 512


def parse_mailbox(piece: str) -> Mailbox | None:
    """Read one ``Name <addr>`` / ``addr (Name)`` / ``addr`` / ``Name`` item.

    Returns a Mailbox whose address is None when only a name is given; an address is
    never invented from a name. Memoised: the same few senders write most mail, and the
    result (a frozen Mailbox) depends on the text alone.
    """
    if len(piece) <= _CACHED_PIECE:
        return _parse_mailbox_cached(piece)
    return _parse_mailbox(piece)


def _parse_mailbox(piece: str) -> Mailbox | None:
    s = piece.strip()
    if not s:
        return None
    # Group syntax: "undisclosed-recipients:;" or "Team: a@b, c@d;" handled by caller.
    if "&" in s:
        s = html_lib.unescape(s)  # "Sam&lt;info@x.org&gt;" pasted from HTML
    s = _MAILTO_INNER.sub(_mailto_inner, s).strip()  # Name <a@b<mailto:a@b>> / Name<mailto:a@b>
    tail = _MAILTO_TAIL.search(s)
    if tail:  # Name [mailto:a@b]  /  a@b [mailto:a@b]
        rest = s[: tail.start()].strip()
        if "@" in rest:
            s = rest
        else:
            inner = tail.group(0).strip().strip("[]<>()").strip()[7:].strip()
            s = (f"{rest} <{inner}>" if rest else inner).strip()
    addr: str | None = None
    name = ""
    angle_addrs = [a.strip() for a in _ANGLE.findall(s) if "@" in a]
    if angle_addrs:
        addr = angle_addrs[-1]
        name = s
        while True:  # drop every <...>, innermost first
            stripped = _ANGLE.sub(" ", name)
            if stripped == name:
                break
            name = stripped
        name = name.replace("<", " ").replace(">", " ")
    else:
        # addr (Name)  /  Name (addr)  /  bare addr  /  Name addr  /  "addr"
        m = re.search(r"\(([^()]*)\)", s)
        comment = m.group(1).strip() if m else ""
        rest = re.sub(r"\([^()]*\)", " ", s) if m else s
        rest_unq = rest.replace('"', " ").replace("'", " ")
        found = _BARE_ADDR.findall(rest_unq)
        if found:
            addr = found[-1]
            name = comment if comment else rest_unq.replace(addr, " ")
        elif "@" in comment and _BARE_ADDR.search(comment):
            addr = _BARE_ADDR.findall(comment)[-1]  # Name (a@b)
            name = rest
        else:
            name = s
            if "<" in name and ">" not in name:
                name = name.split("<", 1)[0]
    if addr is None and "@" in s:
        # "jdoe@test . example": obsolete spacing around dots (RFC 5322 §4.4)
        squeezed = _BARE_ADDR.findall(re.sub(r"\s*\.\s*", ".", s))
        if squeezed:
            addr = squeezed[-1]
            name = ""
    if addr is not None:
        addr = _COMMENT.sub("", addr)  # pete(his account)@silly.test(his host)
        addr = _ROUTE.sub("", addr)  # <@machine.tld:mary@example.net>
        addr = addr.strip().strip(".,;:").strip()
        if addr.lower().startswith("mailto:"):
            addr = addr[7:]
        if "=?" in addr:
            addr = decode_rfc2047(addr)
        if not is_plausible_address(addr):
            if not name.strip():
                name = addr  # keep what was written (e.g. Notes' "Jane Doe/ACME@ACME")
            addr = None
        if addr is not None:
            addr = normalize_address(addr)
    name = _unquote_name(_EMPTY_BRACKETS.sub(" ", name))
    if addr is not None and normalize_address(name) == addr:
        name = ""  # "a@b" <a@b>
    if not name and addr is None:
        return None
    return Mailbox(name=name, address=addr)


_parse_mailbox_cached = lru_cache(maxsize=16384)(_parse_mailbox)


_NAME_WORDS = re.compile(r"^[^\W\d_][\w'’.-]*(?:\s+[^\W\d_][\w'’.-]*){0,2}$")


def _list_pieces(value: str) -> list[str]:
    """The items of an address list, keeping Outlook's unquoted ``Doe, Jane <jane@x>`` whole:
    a bare one-to-three-word name followed by an item whose address comes with a bare name
    is one "Last, First" person, not a name-only recipient."""
    return _joined(split_address_list(value))


def _joined(pieces: list[str]) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        prev = out[-1] if out else ""
        name, _, rest = piece.partition("<") if "<" in piece else piece.partition("[")
        if (
            prev
            and "@" not in prev
            and _NAME_WORDS.match(prev)
            and rest
            and "@" in rest
            and _NAME_WORDS.match(name.strip())
        ):
            out[-1] = f"{prev}, {piece}"
            continue
        out.append(piece)
    return out


def parse_address_list(value: str) -> list[Mailbox]:
    """Read a header-style address list into Mailboxes, tolerant of clients' quirks."""
    if not value:
        return []
    value = value.replace("\r", " ").replace("\n", " ")
    if "&" in value and re.search(r"&(?:lt|gt|quot|amp|#\d+);", value):
        value = html_lib.unescape(value)
    out: list[Mailbox] = []
    for piece in _list_pieces(value):
        # group syntax "Team: a@b" → strip the group label
        if ":" in piece and "<" not in piece.split(":", 1)[0] and '"' not in piece.split(":", 1)[0]:
            head, tail = piece.split(":", 1)
            if "@" not in head and "mailto" not in head.lower():
                piece = tail
        piece = piece.strip().rstrip(";")
        if not piece:
            continue
        mb = parse_mailbox(piece)
        if mb is not None:
            out.append(mb)
    return out


# --- addresses in free text ----------------------------------------------------------

_CANDIDATE = re.compile(
    r"(?<![\w.+\-/=%@])"
    r"([A-Za-z0-9\u00c0-\u024f!#$%&'*+=?^_`{|}~-]+(?:\.[A-Za-z0-9\u00c0-\u024f!#$%&'*+=?^_`{|}~-]+)*"
    r"@"
    r"(?:[A-Za-z0-9\u00c0-\uffff](?:[A-Za-z0-9\u00c0-\uffff-]{0,61}[A-Za-z0-9\u00c0-\uffff])?\.)+"
    r"(?:[A-Za-z\u00c0-\uffff]{2,63}|xn--[A-Za-z0-9-]{1,59}))"
    r"(?![\w@-])",
)
_ID_LINE = re.compile(
    r"(?i)[ \t>]*(?:message-id|references|in-reply-to|content-id|x-[\w-]*id|thread-index)"
    r"\s*:[^\n]*"
)
_ID_DOMAINS = re.compile(
    r"(?i)(?:^|\.)(?:mail\.gmail\.com|prod\.outlook\.com|outlook\.com\.au|"
    r"phx\.gbl|exchangelabs\.com|namprd\d+\.prod\.outlook\.com|eurprd\d+\.prod\.outlook\.com)$"
)
_HEXISH = re.compile(r"^[0-9A-Fa-f]{6,}(?:\.[0-9A-Fa-f]+)*$")
_MAILTO = re.compile(r"(?i)mailto:([^\s\"'<>?\]\[)(,;]+)")
_NAME_BEFORE = re.compile(
    r"(?:\"([^\"\n]{1,80})\"|([^\s<>\"\[\](),:;@][^<>\"\[\]\n(),:;@]{0,79}?))"
    r"\s*[<\[(]\s*(?:mailto:)?$"
)


def _looks_like_message_id(local: str, domain: str) -> bool:
    if _ID_DOMAINS.search(domain):
        return True
    first = domain.split(".", 1)[0]
    if _HEXISH.match(first) and any(c.isdigit() for c in first):
        return True  # image001.png@01D2A3B4.C5D6E7F0
    if re.search(r"\.(?:png|jpe?g|gif|bmp|tiff?)$", local, re.IGNORECASE):
        return True
    # CAxxxxxx=yy+zz@... style random ids: long, mixes case and digits, has = or $
    return len(local) > 24 and ("=" in local or "$" in local) and any(c.isdigit() for c in local)


_PARTICLES = {"van", "von", "de", "da", "di", "der", "den", "del", "la", "le", "du", "dos", "bin"}


def _guess_name(text: str, start: int) -> str:
    """The display name written just before ``<addr>`` / ``[addr]`` / ``(addr)``, if any."""
    line = text[text.rfind("\n", 0, start) + 1 : start]
    m = _NAME_BEFORE.search(line[-100:])
    if not m:
        return ""
    if m.group(1):
        return m.group(1).strip()
    # Unquoted: the trailing run of capitalised words (and particles), at most five.
    words = (m.group(2) or "").split()
    picked: list[str] = []
    for word in reversed(words):
        if len(picked) >= 5 or not (word[:1].isupper() or word.lower() in _PARTICLES):
            break
        picked.append(word)
    name = " ".join(reversed(picked)).strip("'\"*").strip()
    # drop a header label such as "From:" that the regex may not have excluded
    if len(name) > 60 or "http" in name.lower():
        return ""
    return name


def _in_url_or_id(text: str, start: int, end: int) -> bool:
    """Is the candidate at `start` part of a URL, a cid: reference or a Message-ID line?"""
    line_start = text.rfind("\n", 0, start) + 1
    token_start = (
        max(
            text.rfind(" ", line_start, start),
            text.rfind("\t", line_start, start),
            text.rfind("<", line_start, start),
            text.rfind('"', line_start, start),
            text.rfind("(", line_start, start),
        )
        + 1
    )
    token = text[max(token_start, line_start) : end].lower()
    if "://" in token or token.startswith(("cid:", "www.")) or "cid:" in token:
        return True
    if "?" in token and "=" in token:
        return True  # query string of a URL written without a scheme
    id_line = _ID_LINE.match(text, line_start)
    return id_line is not None and id_line.end() > start


# A budget for one text: each candidate is validated (about 1 ms), so 10,000 addresses
# in a body took 7 s. Past these, the rest of the text is not looked at (a defect says so).
MAX_TEXT_ADDRESSES = 200
MAX_TEXT_CANDIDATES = 4 * MAX_TEXT_ADDRESSES


def extract_addresses_from_text(text: str) -> list[tuple[str, str]]:
    """Addresses written in free text, each with a display-name guess (may be empty).

    Counts ``mailto:`` links; ignores strings inside other URLs, ``cid:`` references,
    and Message-ID / Content-ID / References values. Deduplicated, in order of appearance.
    At most `MAX_TEXT_ADDRESSES`, from the first `MAX_TEXT_CANDIDATES` candidates.
    """
    if "@" not in text:
        return []
    found: dict[str, str] = {}
    budget = MAX_TEXT_CANDIDATES
    mailto_spans: list[tuple[int, int]] = []
    if "mailto:" in text or "MAILTO:" in text or "Mailto:" in text:
        for m in _MAILTO.finditer(text):
            mailto_spans.append((m.start(), m.end()))
            a = unquote(m.group(1)).strip().strip(".")
            budget -= 1
            if budget < 0 or len(found) >= MAX_TEXT_ADDRESSES:
                return list(found.items())
            if is_plausible_address(a):
                key = normalize_address(a)
                if key not in found:
                    found[key] = _guess_name(text, m.start())
    for m in _CANDIDATE.finditer(text):
        a = m.group(1).lstrip("'`")  # 'jane@x.com' as Outlook quotes it
        if mailto_spans and any(s <= m.start() < e for s, e in mailto_spans):
            continue
        local, _, domain = a.rpartition("@")
        if _looks_like_message_id(local, domain) or _in_url_or_id(text, m.start(), m.end()):
            continue
        budget -= 1
        if budget < 0 or len(found) >= MAX_TEXT_ADDRESSES:
            break
        if not is_plausible_address(a):
            continue
        key = normalize_address(a)
        if key not in found or not found[key]:
            found[key] = _guess_name(text, m.start())
    return list(found.items())
