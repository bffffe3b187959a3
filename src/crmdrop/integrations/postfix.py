"""Postfix in front of crmdrop, without backscatter.

Postfix asks this policy service at RCPT time (`check_policy_service`), so an
unknown or regenerated dropbox is refused by Postfix itself with `550 5.1.1`
and never accepted-then-bounced. Policy delegation rather than a socketmap or
tcp_table in `relay_recipient_maps`: the answer carries our exact reply text,
and a lookup that fails can say "try later" (`DEFER_IF_PERMIT`) instead of
Postfix's generic table-failure reply (docs/mta.md).

Protocol (postfix.org/SMTPD_POLICY_README.html): `name=value` lines ended by an
empty line; the answer is `action=...` and an empty line; one connection
carries many requests.
"""

from __future__ import annotations

import asyncio
import logging

from crmdrop.config import Settings
from crmdrop.dropbox.address import is_dropbox_domain, redact
from crmdrop.receive.service import Receiver

log = logging.getLogger(__name__)

DEFAULT_POLICY = "127.0.0.1:10040"
DUNNO = "DUNNO"  # "no opinion": Postfix goes on with its other restrictions
DEFER = "DEFER_IF_PERMIT 4.3.0 Temporary failure on our side, please try again later"
MAX_REQUEST = 64 * 1024


def decide(receiver: Receiver, attributes: dict[str, str]) -> str:
    """The action for one policy request: refuse only what is ours and not live."""
    if attributes.get("protocol_state", "RCPT").upper() != "RCPT":
        return DUNNO
    recipient = attributes.get("recipient", "")
    if not recipient or not is_dropbox_domain(recipient, receiver.settings.domain):
        return DUNNO  # not a dropbox domain address: not ours to judge
    try:
        reply, rcpt = receiver.check_recipient(recipient)
    except Exception:
        log.exception("policy lookup failed")
        return DEFER
    if rcpt is not None:
        return DUNNO
    log.info("policy: refused %s", redact(recipient))
    return reply  # "550 5.1.1 ...": Postfix sends it as it is


async def _session(
    receiver: Receiver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            attributes: dict[str, str] = {}
            size = 0
            while True:
                line = await reader.readline()
                size += len(line)
                if not line or size > MAX_REQUEST:
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if not text:
                    break
                name, _, value = text.partition("=")
                attributes[name] = value
            action = await asyncio.to_thread(decide, receiver, attributes)
            writer.write(f"action={action}\n\n".encode())
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def start_policy_server(receiver: Receiver, host: str, port: int) -> asyncio.AbstractServer:
    """Listen for Postfix policy requests on the running loop."""
    server = await asyncio.start_server(lambda r, w: _session(receiver, r, w), host=host, port=port)
    log.info("Postfix policy service listening on %s:%s", host, port)
    return server


def postconf_block(settings: Settings, *, lmtp: str, policy: str) -> str:
    """The shell lines that wire a local Postfix to this crmdrop (`crmdrop mta postfix`)."""
    domain = settings.domain
    lines = [
        "# crmdrop: mail for the dropbox domain goes to crmdrop over LMTP; unknown and",
        "# regenerated dropboxes are refused at RCPT by the policy service (no backscatter).",
        f"postconf -e 'relay_domains = {domain}'",
        f"postconf -e 'transport_maps = inline:{{ {domain}=lmtp:inet:{lmtp} }}'",
        "postconf -e 'smtpd_recipient_restrictions = "
        f"check_policy_service {{ inet:{policy}, default_action=DEFER_IF_PERMIT }}'",
        f"postconf -e 'message_size_limit = {settings.max_message_size}'",
        f"postconf -e 'lmtp_destination_recipient_limit = {settings.max_recipients}'",
        "postfix reload",
    ]
    return "\n".join(lines) + "\n"
