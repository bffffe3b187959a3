"""SPF/DKIM/DMARC verdicts taken from a trusted upstream MTA (SPEC §3.3, §7.2).

Only `Authentication-Results` headers whose authserv-id is the configured one
count (anyone can write such a header). Only a definite failure counts against
the author: DMARC `fail` for the author's domain, or, with no DMARC result, SPF
*and* DKIM both failing. temperror/permerror/none never reject.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import authres


@dataclass(frozen=True)
class AuthVerdict:
    failed: bool
    detail: str  # recorded either way


_AUTHSERV = re.compile(r"\s*(?:\([^()]*\)\s*)*([^\s;()]+)")


def _authserv_of(value: str) -> str | None:
    """The authserv-id a header starts with (before any parsing that could fail)."""
    m = _AUTHSERV.match(value)
    return m.group(1).lower() if m else None


def upstream_verdict(
    headers: Mapping[str, list[str]], authserv_id: str, author: str | None
) -> AuthVerdict:
    """Judge the author's domain from the trusted upstream's Authentication-Results.

    Only the topmost such header counts: the trusted MTA adds its own above the
    message, and any lower one bearing its name was written by the sender.
    """
    domain = (author or "").rpartition("@")[2].lower()
    results: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for value in headers.get("authentication-results", []):  # top first
        if _authserv_of(value) != authserv_id.lower():
            continue  # another server's (or a malformed one that names nobody)
        try:
            parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
        except Exception:
            # The trusted MTA's own header, unreadable: we cannot tell, and must not
            # fall through to a lower one that the sender could have written.
            return AuthVerdict(
                False, f"temperror: unreadable Authentication-Results of {authserv_id}"
            )
        if str(parsed.authserv_id).lower() != authserv_id.lower():
            continue
        for result in parsed.results:
            props = {f"{p.type}.{p.name}".lower(): str(p.value).lower() for p in result.properties}
            results.setdefault(str(result.method).lower(), []).append(
                (str(result.result).lower(), props)
            )
        break
    if not results:
        return AuthVerdict(False, f"no Authentication-Results from {authserv_id}")
    dmarc = [r for r, p in results.get("dmarc", []) if p.get("header.from", domain) == domain]
    decided = [r for r in dmarc if r in ("pass", "fail")]
    if decided:  # none / temperror / permerror decide nothing: SPF and DKIM below do
        return AuthVerdict(
            "fail" in decided, f"dmarc={decided[0]} for {domain} (from {authserv_id})"
        )
    spf = [r for r, _ in results.get("spf", [])]
    dkim = [r for r, _ in results.get("dkim", [])]
    spf_fail = bool(spf) and all(r in ("fail", "softfail") for r in spf)
    dkim_fail = not any(r == "pass" for r in dkim) and any(r == "fail" for r in dkim)
    detail = f"spf={','.join(spf) or 'none'} dkim={','.join(dkim) or 'none'} (from {authserv_id})"
    return AuthVerdict(spf_fail and dkim_fail, detail)


_RECORDED_DMARC = re.compile(r"^dmarc=(\w+) for ")
_RECORDED_SPF_DKIM = re.compile(r"^spf=([\w,]+) dkim=([\w,]+) ")


def recorded_failure(detail: str) -> str | None:
    """The failure an accept-time verdict (its recorded `detail`) states, else None: the
    worker's authoritative sender check judges by the same verdict (SPEC §3.3)."""
    dmarc = _RECORDED_DMARC.match(detail)
    if dmarc is not None:
        return detail if dmarc.group(1) == "fail" else None
    both = _RECORDED_SPF_DKIM.match(detail)
    if both is None:
        return None
    spf, dkim = both.group(1).split(","), both.group(2).split(",")
    spf_fail = spf != ["none"] and all(r in ("fail", "softfail") for r in spf)
    dkim_fail = "pass" not in dkim and "fail" in dkim
    return detail if spf_fail and dkim_fail else None
