"""A private Dovecot for tests: a throw-away configuration in a temp dir, IMAP
(STARTTLS), IMAPS and LMTP on free loopback ports, a self-signed certificate made
here, every user's password `secret` (a passwd-file-free static passdb), and
plus-addressing (`recipient_delimiter = +`). Started with `dovecot -c`, stopped again."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support import free_port

PASSWORD = "secret"

CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 8
ssl = yes
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
ssl_dh = </usr/share/dovecot/dh.pem
auth_mechanisms = plain login
disable_plaintext_auth = no
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={dir}/home/%u
}}
mail_location = maildir:{dir}/mail/%u
recipient_delimiter = +
lmtp_hdr_delivery_address = original
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
"""


def self_signed(directory: Path) -> Path:
    """A key and a certificate for 127.0.0.1; the certificate's path (a CA file too)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path = directory / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


class DovecotInstance:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="crmdrop-dovecot-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.imap, self.imaps, self.lmtp = free_port(), free_port(), free_port()
        self.cert = self_signed(self.dir)
        for sub in ("mail", "home"):
            (self.dir / sub).mkdir()
            shutil.chown(self.dir / sub, user="mail", group="mail")
        self.conf = self.dir / "dovecot.conf"
        self.conf.write_text(
            CONF.format(
                dir=self.dir, password=PASSWORD, imap=self.imap, imaps=self.imaps, lmtp=self.lmtp
            )
        )

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> DovecotInstance:
        # The daemon keeps any pipe it is given open: no capture_output here.
        errors = self.dir / "start.err"
        with errors.open("wb") as err:
            code = subprocess.call(
                ["dovecot", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=err
            )
        if code != 0:
            raise RuntimeError(f"dovecot did not start: {errors.read_text()}{self.log()}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (self.dir / "run" / "master.pid").exists():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"dovecot did not start: {self.log()}")

    def __exit__(self, *exc: object) -> None:
        subprocess.call(
            ["dovecot", "-c", str(self.conf), "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)
