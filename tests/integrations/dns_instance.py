"""A tiny authoritative DNS server for tests: TXT records from a dict, on port 53 of a
loopback address of its own (127.x.y.z), so the milters (tests/integrations/milters.py)
can look up DKIM keys, SPF and DMARC records with no Internet. Names it does not know
get NXDOMAIN. Built on dnspython's message codec (already a crmdrop dependency)."""

from __future__ import annotations

import random
import socket
import threading

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def _txt_strings(value: str) -> str:
    """A TXT value as quoted strings of at most 255 bytes (a DKIM key is longer)."""
    return " ".join(f'"{value[i : i + 250]}"' for i in range(0, len(value), 250))


class DnsInstance:
    """`with DnsInstance({"name.": "txt value"}) as dns_:` — answers on `dns_.address`:53."""

    def __init__(self, txt: dict[str, str]) -> None:
        self.txt = {dns.name.from_text(k): v for k, v in txt.items()}
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):  # a random loopback address: parallel runs never collide
            self.address = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.53"
            try:
                self.sock.bind((self.address, 53))
                break
            except OSError:
                continue
        else:
            raise RuntimeError("no free loopback address for the test DNS server")
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= 0x0400  # AA: authoritative
        question = query.question[0]
        self.queries.append(f"{question.name} {dns.rdatatype.to_text(question.rdtype)}")
        value = self.txt.get(question.name)
        if value is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            response.answer.append(
                dns.rrset.from_text(question.name, 60, "IN", "TXT", _txt_strings(value))
            )
        return response.to_wire()

    def _serve(self) -> None:
        while True:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except OSError:
                return  # closed
            try:
                self.sock.sendto(self._answer(wire), peer)
            except Exception:  # a malformed query: ignore it, as a server would
                continue

    def __enter__(self) -> DnsInstance:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
