"""A private Postfix instance for tests: its own config and queue directories in a
temp dir, smtpd on a free loopback port, started with `postfix -c DIR start` and
stopped again. Debian's postfix package provides the programs (`.ci/run` installs it)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support import free_port

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000 0 flush
proxymap  unix  - - n -    - proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
local     unix  - n n -    - local
lmtp      unix  - - n -    - lmtp
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.test
mydomain = test
myorigin = mx.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = {dir}/maillog
maillog_file_prefixes = /tmp
smtp_host_lookup = native
disable_dns_lookups = yes
"""

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "bounce", "defer")


class PostfixInstance:
    """`with PostfixInstance() as mx:` — configure with `postconf`, then `start()`."""

    def __init__(self) -> None:
        # Not under pytest's 0700 tmp dirs: the postfix user must reach the queue.
        self.dir = Path(tempfile.mkdtemp(prefix="crmdrop-postfix-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.port = free_port()
        (self.dir / "main.cf").write_text(MAIN_CF.format(dir=self.dir))
        (self.dir / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self.dir / "queue").mkdir()
        (self.dir / "data").mkdir()
        shutil.chown(self.dir / "data", user="postfix")
        self.started = False

    def postconf(self, *args: str) -> str:
        return self._run("postconf", "-c", str(self.dir), *args)

    def apply(self, block: str) -> None:
        """Run the `postconf -e` lines of `crmdrop mta postfix`'s output on this instance."""
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["postconf", "-e"]:
                self.postconf("-e", *words[2:])

    def start(self) -> None:
        self._run("postfix", "-c", str(self.dir), "check")  # creates the queue directories
        self._run("postfix", "-c", str(self.dir), "start")
        self.started = True

    def queued(self) -> list[Path]:
        """Every message file in the queue (a bounce waiting to go out would be one)."""
        queue = self.dir / "queue"
        return [
            p for q in QUEUES if (queue / q).exists() for p in (queue / q).rglob("*") if p.is_file()
        ]

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, *args: str) -> str:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr}{done.stdout}")
        return done.stdout

    def __enter__(self) -> PostfixInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            subprocess.run(
                ["postfix", "-c", str(self.dir), "stop"], capture_output=True, timeout=60
            )
        shutil.rmtree(self.dir, ignore_errors=True)
