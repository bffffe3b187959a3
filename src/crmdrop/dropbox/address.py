"""The dropbox address codec (SPEC §2): tokens, the six addresses, parsing and redaction.

Only the codec lives here. Whether a token is live (regenerated, revoked) is the store's
question; this module answers "which token and which kind does this address name?".
"""

from __future__ import annotations

import re
import secrets

from crmdrop.dropbox.plan import DropboxKind
from crmdrop.mail.addresses import normalize_address, normalize_domain

__all__ = [
    "TOKEN_ALPHABET",
    "TOKEN_LENGTH",
    "dropbox_addresses",
    "is_dropbox_domain",
    "new_token",
    "parse_dropbox_address",
    "redact",
    "redact_text",
]

TOKEN_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
TOKEN_LENGTH = 20  # 20 * log2(36) ≈ 103 bits, above the 80 the spec asks for

_PREFIX = "dropbox-"
# The suffix each kind adds to the local part; the note dropbox has none.
_SUFFIX: dict[DropboxKind, str] = {
    DropboxKind.NOTE: "",
    DropboxKind.CASE: "-case",
    DropboxKind.OPP: "-opp",
    DropboxKind.TASK: "-task",
    DropboxKind.TODAY: "-today",
    DropboxKind.TOMORROW: "-tomorrow",
}
_KIND_BY_SUFFIX = {suffix.lstrip("-"): kind for kind, suffix in _SUFFIX.items() if suffix}

# Tokens never contain "-", so "dropbox-<token>-<kind>" splits without ambiguity.
_LOCAL = re.compile(r"^dropbox-(?P<token>[a-z0-9]+)(?:-(?P<kind>[a-z]+))?$")
_LOCAL_IN_TEXT = re.compile(
    r"(?i)\b(dropbox-)([a-z0-9]+)((?:-(?:case|opp|task|today|tomorrow))?(?:\+[^@\s]*)?@)"
)


def new_token() -> str:
    """A fresh secret token: 20 characters of base36 from `secrets` (≈ 103 bits)."""
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def _domain(domain: str) -> str:
    """The dropbox domain in the same canonical form `normalize_address` gives addresses."""
    return normalize_domain(domain)


def dropbox_addresses(token: str, domain: str) -> dict[DropboxKind, str]:
    """The six addresses of one token, in `DropboxKind` order."""
    token = token.strip().lower()
    d = _domain(domain)
    return {kind: f"{_PREFIX}{token}{_SUFFIX[kind]}@{d}" for kind in DropboxKind}


def is_dropbox_domain(address: str, domain: str) -> bool:
    """True when `address` is on the dropbox domain itself (subdomains are not)."""
    _, at, addr_domain = normalize_address(address).rpartition("@")
    return bool(at) and addr_domain == _domain(domain)


def parse_dropbox_address(address: str, domain: str) -> tuple[str, DropboxKind] | None:
    """(token, kind) that `address` names, or None when it is no dropbox address on `domain`.

    Case-insensitive; a `+tag` after the local part is ignored (SPEC §2.2). A syntactically
    valid address with an unknown token still parses: telling live from dead is the store's.
    """
    if not is_dropbox_domain(address, domain):
        return None
    local = normalize_address(address).rpartition("@")[0]
    local = local.partition("+")[0]
    m = _LOCAL.match(local)
    if m is None:
        return None
    kind_name = m.group("kind")
    if kind_name is None:
        return m.group("token"), DropboxKind.NOTE
    kind = _KIND_BY_SUFFIX.get(kind_name)
    if kind is None:
        return None
    return m.group("token"), kind


def _redact_token(token: str) -> str:
    return token[:2] + "…"


def redact(address: str) -> str:
    """`address` with its dropbox token hidden, for logs: ``dropbox-ab…-case@D``.

    Any other address is returned unchanged. The first two characters stay so that two
    dropboxes in one log can still be told apart; two of 20 leak ~10 of 103 bits.
    """
    return redact_text(address)


def redact_text(text: str) -> str:
    """`text` (a log line, an error) with the token of every dropbox address in it hidden."""
    return _LOCAL_IN_TEXT.sub(lambda m: m.group(1) + _redact_token(m.group(2)) + m.group(3), text)
