"""SPF, DKIM and DMARC checked here, against DNS (SPEC §3.3, §7.2, `sender_auth = dns`).

authheaders (with pyspf and dkimpy) writes an Authentication-Results header for the
message as this server sees it (the connecting IP, HELO, MAIL FROM); that header is then
judged by the same rule as an upstream MTA's (`dropbox.sender_auth.upstream_verdict`),
so there is one definition of "a definite failure". Any DNS trouble is a temperror:
never held against the message, and recorded all the same.
"""

from __future__ import annotations

import ipaddress
import logging
import re

import authheaders
import dkim
import dns.resolver
import spf

from crmdrop.config import split_hostport
from crmdrop.dropbox.sender_auth import AuthVerdict, upstream_verdict

log = logging.getLogger(__name__)


def configure_resolver(resolver: str | None, timeout: float) -> None:
    """Point dnspython — which pyspf, dkimpy and authheaders all use — at our resolver.

    Process-wide by nature (the libraries take no resolver argument): called once, at start.
    """
    try:
        chosen = dns.resolver.Resolver(configure=resolver is None)
    except dns.resolver.NoResolverConfiguration:
        log.warning("no DNS resolver configured: sender authentication will temperror")
        chosen = dns.resolver.Resolver(configure=False)
    if resolver is not None:
        host, port = split_hostport(resolver)
        chosen.nameservers = [host]
        chosen.port = port
    chosen.timeout = timeout
    chosen.lifetime = timeout
    dns.resolver.default_resolver = chosen


def _spf(ip: str, mail_from: str, helo: str | None, timeout: float) -> tuple[str, str]:
    """(result, identity checked). pyspf, with our timeout (its default is 20 s a lookup)."""
    sender = mail_from or f"postmaster@{helo or 'unknown'}"
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return "none", sender  # no IP to check (a pipe delivery)
    try:
        result, _explanation = spf.check2(
            i=ip, s=sender, h=helo or "unknown", timeout=timeout, querytime=timeout
        )
    except Exception:
        return "temperror", sender
    return str(result), sender


def _dkim(raw: bytes, timeout: float) -> tuple[str, str | None]:
    """(result, signing domain). An unsigned message is `none`, not `fail`."""
    if not re.search(rb"(?im)^dkim-signature:", raw.split(b"\r\n\r\n", 1)[0]):
        return "none", None
    checker = dkim.DKIM(raw, timeout=int(max(1, timeout)))
    try:
        ok = checker.verify()
    except dkim.DnsTimeoutError:
        return "temperror", None
    except Exception:
        return "permerror", None
    domain = checker.domain.decode() if isinstance(checker.domain, bytes) else checker.domain
    return ("pass" if ok else "fail"), domain


def dns_verdict(
    raw: bytes,
    *,
    ip: str,
    helo: str | None,
    mail_from: str,
    author: str | None,
    authserv_id: str,
    timeout: float,
) -> AuthVerdict:
    """The verdict on the author's domain, from checks made here against DNS."""
    spf_result, spf_identity = _spf(ip, mail_from, helo, timeout)
    dkim_result, dkim_domain = _dkim(raw, timeout)
    prev = (
        f"Authentication-Results: {authserv_id}; spf={spf_result} smtp.mailfrom={spf_identity}; "
        f"dkim={dkim_result}" + (f" header.d={dkim_domain}" if dkim_domain else "")
    )
    try:  # DMARC on top of our SPF and DKIM results
        header = authheaders.authenticate_message(
            raw, authserv_id, prev=prev, spf=False, dkim=False, dmarc=True
        )
    except Exception as exc:  # the DMARC lookup timed out or failed: temperror
        detail = f"spf={spf_result} dkim={dkim_result} dmarc=temperror ({type(exc).__name__})"
        return AuthVerdict(False, detail)
    value = str(header).split(":", 1)[1].strip()
    return upstream_verdict({"authentication-results": [value]}, authserv_id, author)
