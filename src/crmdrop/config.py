"""One typed Settings object, read once at start-up and passed explicitly.

Sources, highest first: explicit overrides (command-line flags), environment
variables `CRMDROP_*`, a TOML file (`CRMDROP_CONFIG`, default
`./crmdrop.toml` when present), then the defaults below. See
docs/configuration.md for every field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _toml_path() -> Path:
    return Path(os.environ.get("CRMDROP_CONFIG", "crmdrop.toml"))


class Settings(BaseSettings):
    """Every knob crmdrop has; defaults give the embedded SQLite set-up."""

    model_config = SettingsConfigDict(env_prefix="CRMDROP_", extra="forbid", frozen=True)

    domain: str = Field("dropbox.localhost", description="The dropbox domain D of SPEC §2.1.")
    data_dir: Path = Field(Path("crmdrop-data"), description="Where SQLite and logs live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite under data_dir."
    )
    smtp_listen: str = "127.0.0.1:2525"
    lmtp_listen: str = "127.0.0.1:2424"
    http_listen: str = "127.0.0.1:8025"
    smtp_hostname: str = Field("crmdrop.localhost", description="Name in the SMTP banner.")
    smtp_relay: str | None = Field(None, description="host:port that outgoing replies go to.")
    reply_from: str | None = Field(None, description="From of replies; default crmdrop@domain.")
    max_message_size: int = Field(25 * 1024 * 1024, description="Bytes; larger → 552 5.3.4.")
    smtp_spool_bytes: int = Field(
        1024 * 1024,
        description="DATA past this many bytes waits for its commit in a temporary file.",
    )
    max_recipients: int = Field(50, description="RCPTs per message; more → 452 4.5.3.")
    worker_poll_seconds: float = Field(
        2.0, description="Idle safety poll of the worker (it is woken when mail is queued)."
    )
    worker_parse_process: bool = Field(
        True, description="SQLite: a second process parses the next batch while one files."
    )
    claim_lease_seconds: float = Field(
        300.0, description="A claim older than this is a dead worker's: another takes it."
    )
    max_attempts: int = Field(6, description="Processing attempts before a delivery is parked.")
    retry_base_seconds: float = Field(2.0, description="First retry delay; doubles each time.")
    reply_rate_per_hour: int = Field(10, description="Error replies per user per hour.")
    sender_auth: Literal["off", "upstream", "dns"] = Field(
        "off",
        description="SPF/DKIM/DMARC: off; upstream (trust upstream_authserv); dns (check here).",
    )
    dns_resolver: str | None = Field(
        None, description="host:port of the DNS resolver for sender_auth=dns; default: system."
    )
    dns_timeout: float = Field(3.0, description="Seconds per DNS lookup before a temperror.")
    upstream_authserv: str | None = Field(
        None, description="authserv-id whose Authentication-Results header is trusted."
    )
    public_url: str | None = Field(
        None,
        description="Where users reach the web app (https://crm.example.com behind a TLS "
        "proxy): links in emails use it; https makes the session cookie Secure.",
    )
    secret_key: str | None = Field(
        None,
        description="Signs session cookies; default: generated once into data_dir/secret_key.",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For/-Proto are believed (comma-separated, or *).",
    )
    login_max_failures: int = Field(
        10, description="Failed sign-ins per account in login_lockout_minutes before refusal."
    )
    login_max_failures_ip: int = Field(
        50, description="Failed sign-ins from one IP in login_lockout_minutes before refusal."
    )
    login_lockout_minutes: int = Field(15, description="The throttling window and lockout.")
    smtp_max_sessions: int = Field(100, description="Concurrent SMTP sessions; more → 421.")
    smtp_max_sessions_per_ip: int = Field(
        10, description="Concurrent SMTP sessions per client IP; more → 421 4.7.0."
    )
    smtp_max_commands: int = Field(
        1000, description="SMTP commands in one session, all verbs together; more → 421."
    )
    smtp_max_same_command: int = Field(
        200, description="Times one SMTP verb may be given in a session; more → 421."
    )
    smtp_idle_timeout: float = Field(
        300.0, description="Seconds an SMTP/LMTP session may wait between commands."
    )
    smtp_unknown_rcpt_tarpit: int = Field(
        5, description="Unknown dropbox RCPTs per client IP per hour before each RCPT waits."
    )
    smtp_unknown_rcpt_limit: int = Field(
        30, description="Unknown dropbox RCPTs per client IP per hour before 421 4.7.0."
    )
    smtp_tarpit_seconds: float = Field(
        2.0, description="Added wait per unknown RCPT past the tarpit threshold (max 30 s)."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate chain for STARTTLS.")
    tls_key: Path | None = Field(None, description="PEM private key for STARTTLS.")
    delivery_time_budget: float = Field(
        60.0, description="Seconds parse + decide of one delivery may take; past it: parked."
    )
    raw_retention_days: int = Field(
        0, description="Delete raw bytes of filed deliveries after N days; 0 keeps them."
    )
    webhook_timeout_seconds: float = Field(10.0, description="HTTP timeout of one webhook POST.")
    webhook_retry_base_seconds: float = Field(
        10.0, description="First webhook retry delay; doubles each time, at most an hour."
    )
    webhook_max_attempts: int = Field(30, description="Tries of one webhook message.")
    webhook_allow_private: bool = Field(
        False,
        description="Let webhook URLs reach loopback, private, link-local or reserved addresses.",
    )
    webhook_keep_days: int = Field(
        30, description="Delete sent or given-up webhook messages after N days (0 keeps them)."
    )
    webhook_disable_after_seconds: float = Field(
        86400.0, description="An endpoint failing this long is disabled and its owner told."
    )
    api_rate_limit: str = Field(
        "120/minute", description="Requests per API token (the `limits` notation)."
    )
    api_max_body_bytes: int = Field(1_048_576, description="Largest API request body.")
    metrics: Literal["off", "loopback", "token"] = Field(
        "off", description="/metrics: off; open to loopback clients; or bearer metrics_token."
    )
    metrics_token: str | None = Field(None, description="Bearer token for metrics = token.")
    log_level: str = "INFO"
    # Provider inbound webhooks (/inbound/*): an endpoint whose key is unset answers 404.
    inbound_max_age_seconds: float = Field(
        300.0, description="Freshness window of a signed webhook's timestamp."
    )
    mailgun_signing_key: str | None = Field(None, description="Mailgun webhook signing key.")
    sendgrid_verification_key: str | None = Field(
        None, description="SendGrid signed-webhook public key (base64 DER or PEM)."
    )
    sendgrid_basic_auth: str | None = Field(None, description="user:password for SendGrid.")
    postmark_basic_auth: str | None = Field(None, description="user:password for Postmark.")
    ses_topic_arns: str | None = Field(None, description="Comma-separated SNS topic ARNs.")
    ses_cert_urls: str | None = Field(
        None, description="Comma-separated URL prefixes SNS signing certificates may come from."
    )
    # Postfix recipient lookup (policy delegation) served by `crmdrop serve`.
    postfix_policy_listen: str | None = Field(
        None, description="host:port of the Postfix policy service; off when unset."
    )
    # IMAP: one mailbox watched by `crmdrop imap` (or by `serve` with imap_serve).
    imap_host: str | None = Field(None, description="IMAP server; `crmdrop imap` needs it.")
    imap_port: int | None = Field(None, description="Default 993 (tls) or 143.")
    imap_security: Literal["tls", "starttls", "none"] = "tls"
    imap_ca_file: str | None = Field(None, description="CA bundle to trust for the IMAP server.")
    imap_user: str | None = None
    imap_password: str | None = None
    imap_folder: str = "INBOX"
    imap_handled_folder: str = "crmdrop-handled"
    imap_refused_folder: str = "crmdrop-refused"
    imap_address_pattern: str = Field(
        r"^(?:[^+@]+\+|dropbox-)(?P<token>[a-z0-9]+)(?:-(?P<kind>[a-z]+))?@",
        description="Regex with groups token and kind, matched on the mailbox address.",
    )
    imap_poll_seconds: float = Field(60.0, description="Polling interval without IDLE.")
    imap_idle: bool = Field(True, description="Wait with IMAP IDLE when the server has it.")
    imap_serve: bool = Field(False, description="`crmdrop serve` runs `crmdrop imap` as a child.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_toml_path())
        return (init_settings, env_settings, toml)

    @property
    def db_url(self) -> str:
        """The database URL in force: the configured one or SQLite in data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'crmdrop.db').resolve()}"

    @property
    def web_url(self) -> str:
        """The web app's base URL, without a trailing slash (public_url or http_listen)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.http_listen}"

    @property
    def ses_topics(self) -> set[str]:
        return {t.strip() for t in (self.ses_topic_arns or "").split(",") if t.strip()}

    @property
    def ses_cert_prefixes(self) -> list[str]:
        return [u.strip() for u in (self.ses_cert_urls or "").split(",") if u.strip()]

    @property
    def reply_sender(self) -> str:
        return self.reply_from or f"crmdrop@{self.domain}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; `overrides` (from flags) win over every other source."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)


def split_hostport(value: str) -> tuple[str, int]:
    """'127.0.0.1:2525' → ('127.0.0.1', 2525); '[::1]:25' works too."""
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)
