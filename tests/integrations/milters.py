"""Debian's OpenDKIM and OpenDMARC as milters for a private Postfix, configured as in
docs/mta.md ("Passing SPF, DKIM and DMARC through Authentication-Results").

They look up DKIM keys, SPF and DMARC records in DNS; the test serves those from a
`DnsInstance` on a loopback address. Each milter runs in a mount namespace of its own
(`unshare -m`) where /etc/resolv.conf is bind-mounted to name that server, so nothing
outside the test sees the change. Two lines differ from the recipe, both because the
test's SMTP client connects from 127.0.0.1, which both milters treat as the local,
trusted sender by default: OpenDKIM's `InternalHosts` and OpenDMARC's `IgnoreHosts`
name an unrelated address instead."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import free_port

OPENDKIM_CONF = """\
Mode                v
Socket              inet:{port}@127.0.0.1
AuthservID          {authserv}
RemoveARFrom        {authserv}
RemoveARAll         yes
AlwaysAddARHeader   yes
InternalHosts       {dir}/internal-hosts
Syslog              no
LogResults          yes
"""

OPENDMARC_CONF = """\
Socket              inet:{port}@127.0.0.1
AuthservID          {authserv}
TrustedAuthservIDs  {authserv}
SPFSelfValidate     true
SPFIgnoreResults    true
RejectFailures      {reject}
IgnoreHosts         {dir}/internal-hosts
Syslog              false
"""


class Milter:
    """One milter process, its configuration written to a file and run in the foreground."""

    def __init__(self, dir_: Path, name: str, conf: str, argv: list[str], resolver: str) -> None:
        self.port = free_port()
        self.conf = dir_ / f"{name}.conf"
        self.conf.write_text(conf.replace("{port}", str(self.port)).replace("{dir}", str(dir_)))
        self.argv = argv
        self.resolv = dir_ / "resolv.conf"
        self.resolv.write_text(f"nameserver {resolver}\noptions attempts:1 timeout:2\n")
        self.log = dir_ / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        shell = f'mount --bind "{self.resolv}" /etc/resolv.conf && exec "$@"'
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["unshare", "-m", "sh", "-c", shell, "milter", *self.argv, str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.argv[0]} did not listen: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Milters:
    """`with Milters(resolver_ip, "mx.test") as m:` — OpenDKIM then OpenDMARC, started.
    `reject=False` turns OpenDMARC's `RejectFailures` off: it only writes its verdict."""

    def __init__(self, resolver: str, authserv: str, reject: bool = True) -> None:
        self.reject = reject
        self.dir = Path(tempfile.mkdtemp(prefix="crmdrop-milters-", dir="/tmp"))
        (self.dir / "internal-hosts").write_text("192.0.2.254\n")
        dkim_conf = OPENDKIM_CONF.replace("{authserv}", authserv)
        dmarc_conf = OPENDMARC_CONF.replace("{authserv}", authserv).replace(
            "{reject}", "true" if reject else "false"
        )
        self.opendkim = Milter(
            self.dir, "opendkim", dkim_conf, ["/usr/sbin/opendkim", "-f", "-x"], resolver
        )
        self.opendmarc = Milter(
            self.dir, "opendmarc", dmarc_conf, ["/usr/sbin/opendmarc", "-f", "-c"], resolver
        )

    @property
    def sockets(self) -> str:
        """The value of Postfix's `smtpd_milters`, in the recipe's order."""
        return f"inet:127.0.0.1:{self.opendkim.port}, inet:127.0.0.1:{self.opendmarc.port}"

    def logs(self) -> str:
        return "".join(
            m.log.read_text(errors="replace")
            for m in (self.opendkim, self.opendmarc)
            if m.log.exists()
        )

    def __enter__(self) -> Milters:
        try:
            self.opendkim.start()
            self.opendmarc.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.opendmarc.stop()
        self.opendkim.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
