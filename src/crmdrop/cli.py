"""The `crmdrop` command. Users script it: the names and JSON shapes are a contract.

Every command finds the database from `--data DIR` or `CRMDROP_DATABASE_URL`, as
`serve` does, and brings the schema up to date first (cheap when it is).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session

from crmdrop.config import Settings, load_settings
from crmdrop.dropbox.address import dropbox_addresses, parse_dropbox_address
from crmdrop.dropbox.plan import FilingPlan
from crmdrop.mail.parse import parse_message
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.export import delivery_json, export_account
from crmdrop.store.inbound import retry, retry_all_failed
from crmdrop.store.models import Account, Delivery, User

app = typer.Typer(no_args_is_help=True, add_completion=False, help="crmdrop: the CRM email dropbox")
users_app = typer.Typer(no_args_is_help=True, help="Users and their dropboxes.")
addresses_app = typer.Typer(no_args_is_help=True, help="A user's additional addresses.")
exclusions_app = typer.Typer(no_args_is_help=True, help="An account's exclusion list.")
dropbox_app = typer.Typer(no_args_is_help=True, help="Dropbox addresses.")
deliveries_app = typer.Typer(no_args_is_help=True, help="Processing records.")
db_app = typer.Typer(no_args_is_help=True, help="The database.")
app.add_typer(users_app, name="users")
app.add_typer(addresses_app, name="addresses")
app.add_typer(exclusions_app, name="exclusions")
app.add_typer(dropbox_app, name="dropbox")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(db_app, name="db")

Data = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory (SQLite lives there). Default ./crmdrop-data."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]

# sysexits(3) codes for `ingest` (an MTA pipe transport reads them)
EX_OK, EX_DATAERR, EX_NOUSER, EX_TEMPFAIL, EX_NOPERM = 0, 65, 67, 75, 77


def _exit_code(reply: str) -> int:
    """The sysexits code an MTA pipe transport understands for an SMTP reply line."""
    if reply.startswith("2"):
        return EX_OK
    if reply.startswith("4"):
        return EX_TEMPFAIL
    if reply.startswith("550 5.1.1"):
        return EX_NOUSER
    if reply.startswith("552"):
        return EX_DATAERR
    return EX_NOPERM


def _settings(data: Path | None, **overrides: Any) -> Settings:
    return load_settings(data_dir=data, **overrides)


_OPENED: ContextVar[list[Database] | None] = ContextVar("crmdrop_opened", default=None)


@app.callback()
def _root(ctx: typer.Context) -> None:
    """Close every database a command opened when it ends (in-process callers run many)."""
    opened: list[Database] = []
    _OPENED.set(opened)

    def close() -> None:
        for db in opened:
            db.dispose()

    ctx.call_on_close(close)


def _open(settings: Settings) -> Database:
    """The database, migrated, and closed again when the command ends."""
    db = Database(settings.db_url)
    opened = _OPENED.get()
    if opened is not None:
        opened.append(db)
    db.migrate()
    return db


@contextmanager
def _store(data: Path | None, *, write: bool = False) -> Iterator[tuple[Settings, Session]]:
    """A command's transaction: opened, committed (or rolled back), and a refusal of the
    store's (`StoreError`) turned into its message on stderr and exit code 1."""
    settings = _settings(data)
    db = _open(settings)
    try:
        with db.writing() if write else db.reading() as session:
            yield settings, session
    except accounts.StoreError as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"crmdrop: {message}", err=True)
    raise typer.Exit(code)


def _emit(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _user_json(session: Session, user: User, domain: str) -> dict[str, Any]:
    """The shape `users add`, `users show` and `dropbox regenerate` print with --json."""
    account = session.get(Account, user.account_id)
    assert account is not None
    return {
        "email": user.email,
        "account": account.name,
        "dropbox": {k.value: v for k, v in dropbox_addresses(user.token, domain).items()},
    }


def _print_user(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit(data)
        return
    typer.echo(f"user {data['email']} (account {data['account']})")
    for kind, address in data["dropbox"].items():
        typer.echo(f"  {kind:<9} {address}")


@app.command()
def serve(
    data: Data = None,
    smtp: Annotated[str | None, typer.Option(help="SMTP HOST:PORT")] = None,
    lmtp: Annotated[str | None, typer.Option(help="LMTP HOST:PORT")] = None,
    http: Annotated[str | None, typer.Option(help="Web HOST:PORT")] = None,
    no_demo: Annotated[
        bool, typer.Option("--no-demo", help="Do not create the demo account.")
    ] = False,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Run no worker here (`crmdrop worker` elsewhere).")
    ] = False,
) -> None:
    """Run SMTP, LMTP, the web page, the worker and the reply sender."""
    from crmdrop.serve import serve as run

    settings = _settings(data, smtp_listen=smtp, lmtp_listen=lmtp, http_listen=http)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    db = _open(settings)
    if not no_demo:
        _demo(db, settings)
    asyncio.run(run(db, settings, worker=not no_worker))


@app.command()
def worker(
    data: Data = None,
    parent: Annotated[int | None, typer.Option(help="Stop when this process is gone.")] = None,
) -> None:
    """File queued deliveries and send replies (serve runs one; more may run on PostgreSQL)."""
    from crmdrop.serve import run_worker

    settings = _settings(data)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_worker(_open(settings), settings, parent=parent)


DEMO_USER, DEMO_PASSWORD, DEMO_ACCOUNT = "demo@example.com", "demo", "demo"


def _demo(db: Database, settings: Settings) -> None:
    """Create the demo account once, and print how to use it every time."""
    with db.writing() as session:
        user = session.scalar(select(User).where(User.email == DEMO_USER))
        if user is None:
            user = accounts.add_user(
                session,
                DEMO_USER,
                name="Demo User",
                account=DEMO_ACCOUNT,
                password_hash=PasswordHasher().hash(DEMO_PASSWORD),
            )
        shown = _user_json(session, user, settings.domain)
    typer.echo(f"demo account: user {DEMO_USER}, password {DEMO_PASSWORD}")
    _print_user(shown, as_json=False)


@app.command()
def ingest(
    to: Annotated[str, typer.Option("--to", help="The dropbox address (envelope recipient).")],
    from_: Annotated[str, typer.Option("--from", help="Envelope sender; empty for <>.")] = "",
    data: Data = None,
) -> None:
    """Read one message on stdin and queue it (for an MTA pipe transport; sysexits codes)."""
    from crmdrop.receive.authcheck import configure_resolver
    from crmdrop.receive.service import Receiver

    settings = _settings(data)
    if settings.sender_auth == "dns":
        configure_resolver(settings.dns_resolver, settings.dns_timeout)
    try:
        db = _open(settings)
        receiver = Receiver(db, settings)
        reply, rcpt = receiver.check_recipient(to)
    except Exception as exc:  # our fault: the MTA must retry
        _fail(f"temporary failure: {exc}", EX_TEMPFAIL)
        return
    if rcpt is None:
        _fail(reply, EX_NOUSER)
        return
    raw = sys.stdin.buffer.read()
    verdict = receiver.accept(mail_from=from_, rcpts=[rcpt], raw=raw, protocol="pipe", peer="stdin")
    line = verdict.replies[0]
    code = _exit_code(line)
    typer.echo(line, err=code != EX_OK)
    raise typer.Exit(code)


@users_app.command("add")
def users_add(
    email: str,
    name: Annotated[str, typer.Option("--name")],
    account: Annotated[str, typer.Option("--account")],
    timezone: Annotated[str, typer.Option("--timezone")] = "UTC",
    password: Annotated[str | None, typer.Option("--password")] = None,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """Sign a user up and print their six dropbox addresses."""
    hashed = PasswordHasher().hash(password) if password else None
    with _store(data, write=True) as (settings, session):
        user = accounts.add_user(
            session, email, name=name, account=account, timezone=timezone, password_hash=hashed
        )
        shown = _user_json(session, user, settings.domain)
    _print_user(shown, as_json)  # only once committed


@users_app.command("show")
def users_show(email: str, as_json: JsonFlag = False, data: Data = None) -> None:
    """Print a user and their six dropbox addresses (same JSON as `users add`)."""
    with _store(data) as (settings, session):
        shown = _user_json(session, accounts.get_user(session, email), settings.domain)
    _print_user(shown, as_json)


@addresses_app.command("add")
def addresses_add(user_email: str, address: str, data: Data = None) -> None:
    """Add an address that counts as the user's own (SPEC §1.2)."""
    with _store(data, write=True) as (_, session):
        added = accounts.add_user_address(session, user_email, address).email
    typer.echo(f"added {added} to {user_email} (not verified yet)")


@addresses_app.command("verify")
def addresses_verify(user_email: str, address: str, data: Data = None) -> None:
    """Mark an additional address verified: error replies may go to it (SPEC §1.2, §6.4)."""
    with _store(data, write=True) as (_, session):
        verified = accounts.verify_address(session, user_email, address).email
    typer.echo(f"{verified} is verified for {user_email}")


@users_app.command("reply-all")
def users_reply_all(email: str, setting: str, data: Data = None) -> None:
    """`on`: a contact replying to all on a thread the user copied may file (SPEC §3.2)."""
    if setting not in ("on", "off"):
        _fail(f"say on or off, not {setting!r}")
    with _store(data, write=True) as (_, session):
        accounts.set_reply_all(session, email, setting == "on")
    typer.echo(f"reply-all from contacts is {setting} for {email}")


@exclusions_app.command("add")
def exclusions_add(account: str, address_or_domain: str, data: Data = None) -> None:
    """Exclude an address or a whole @domain from ever becoming a contact."""
    with _store(data, write=True) as (_, session):
        pattern = accounts.add_exclusion(session, account, address_or_domain).pattern
    typer.echo(f"excluded {pattern} in account {account}")


@dropbox_app.command("regenerate")
def dropbox_regenerate(user_email: str, as_json: JsonFlag = False, data: Data = None) -> None:
    """Give the user a new token; the six old addresses stop working at once."""
    with _store(data, write=True) as (settings, session):
        shown = _user_json(session, accounts.regenerate_token(session, user_email), settings.domain)
    _print_user(shown, as_json)  # only once committed: the old addresses are dead now


@app.command()
def export(account: str, data: Data = None) -> None:
    """Print the whole account as JSON (fields in docs/export.md)."""
    with _store(data) as (_, session):
        _emit(export_account(session, account))


def _explain_text(result: dict[str, Any]) -> None:
    typer.echo(f"dropbox: {result['dropbox']} of {result['owner']}")
    if result["refused"]:
        typer.echo(f"sender check: REFUSED — {result['refused']}")
        return
    plan = result["plan"]
    typer.echo(f"outcome: {plan['outcome']} — {plan['reason']}")
    typer.echo(f"message key: {plan['message_key']}")
    typer.echo(f"forwarded blocks ({len(plan['forwarded'])}, outermost first):")
    for i, block in enumerate(plan["forwarded"], 1):
        typer.echo(f"  [{i}] " + ", ".join(f"{k}={v}" for k, v in block.items() if v))
    typer.echo("addresses:")
    for d in plan["addresses"]:
        mark = "KEEP" if d["kept"] else "drop"
        where = ", ".join(d["where"])
        detail = f" ({d['detail']})" if d["detail"] else ""
        typer.echo(f"  {mark} {d['address']:<40} rule={d['rule']}{detail}  seen in: {where}")
    typer.echo("would file:")
    for c in plan["contacts"]:
        typer.echo(f"  {c['action']}: {c['name']} <{c['address']}>")
    for r in plan["records"]:
        typer.echo(f"  {r['action']} {r['kind']} {r['ref'] or r['title'] or ''} ({r['why']})")
    if plan["task"]:
        t = plan["task"]
        typer.echo(f"  task: {t['title']!r} due {t['due'] or 'never'}")
    if plan["note"]:
        n = plan["note"]
        typer.echo(
            f"  note: {n['subject']!r} by {n['author_name']} <{n['author_email']}>, "
            f"{n['direction']}, date {n['date']}"
        )
    for notice in plan["notices"]:
        typer.echo(f"  notice: {notice}")
    if plan["reply_to"]:
        typer.echo(f"  error reply to: {plan['reply_to']}")


@app.command()
def explain(
    message: Path,
    to: Annotated[str, typer.Option("--to", help="The dropbox address it was sent to.")],
    from_: Annotated[str | None, typer.Option("--from", help="Envelope sender.")] = None,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """Print the decision for a message without changing anything."""
    from crmdrop.worker import decide_delivery

    settings = _settings(data)
    db = _open(settings)
    target = parse_dropbox_address(to, settings.domain)
    if target is None:
        _fail(f"{to} is not a dropbox address on {settings.domain}")
        return
    parsed = parse_message(message.read_bytes())
    with db.reading() as session:
        found = accounts.dropbox_owner(session, target[0])
        if found is None:
            _fail(f"{to}: no such dropbox (unknown or regenerated)")
        owner = found[0]
        user = session.get(User, owner.user_id)
        assert user is not None
        decision = decide_delivery(
            session,
            parsed,
            user=user,
            kind=target[1],
            mail_from=from_,
            settings=settings,
            now=datetime.now(UTC),
        )
        session.rollback()
    plan: FilingPlan | None = decision.plan
    result = {
        "dropbox": target[1].value,
        "owner": owner.user_email,
        "refused": decision.refused,
        "defects": parsed.defects,
        "plan": plan.to_json() if plan else None,
    }
    if as_json:
        _emit(result)
    else:
        _explain_text(result)


@deliveries_app.command("list")
def deliveries_list(
    account: Annotated[str | None, typer.Option("--account")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """The newest processing records, optionally of one account or status."""
    db = _open(_settings(data))
    with db.reading() as session:
        query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
        if account:
            query = query.where(Delivery.account_id == accounts.get_account(session, account).id)
        if status:
            query = query.where(Delivery.status == status)
        rows = [delivery_json(d) for d in session.scalars(query)]
    if as_json:
        _emit(rows)
        return
    for r in rows:
        typer.echo(
            f"#{r['id']:<6} {r['received_at'][:19]} {r['dropbox']:<8} {r['status']:<10} "
            f"{r['subject'][:40]!r:<44} {r['reason'][:80]}"
        )


@deliveries_app.command("show")
def deliveries_show(delivery_id: int, data: Data = None) -> None:
    """One processing record with its full decision (JSON)."""
    db = _open(_settings(data))
    with db.reading() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            _fail(f"no delivery #{delivery_id}")
            return
        _emit(delivery_json(delivery, full=True))


@deliveries_app.command("raw")
def deliveries_raw(delivery_id: int, data: Data = None) -> None:
    """Write the message exactly as it was received to stdout (an .eml)."""
    db = _open(_settings(data))
    with db.reading() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.raw is None:
            _fail(f"no stored message for delivery #{delivery_id} (refused messages keep none)")
            return
        sys.stdout.buffer.write(delivery.raw)
        sys.stdout.buffer.flush()


@deliveries_app.command("retry")
def deliveries_retry(
    delivery_id: Annotated[int | None, typer.Argument()] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed")] = False,
    data: Data = None,
) -> None:
    """Queue a parked delivery again (or every failed one)."""
    db = _open(_settings(data))
    now = datetime.now(UTC)
    with db.writing() as session:
        if all_failed:
            typer.echo(f"queued {retry_all_failed(session, now=now)} failed deliveries again")
            return
        if delivery_id is None:
            _fail("give a delivery id or --all-failed")
            return
        try:
            retry(session, delivery_id, now=now)
        except LookupError as exc:
            _fail(str(exc))
        typer.echo(f"delivery #{delivery_id} queued again")


@db_app.command("upgrade")
def db_upgrade(data: Data = None) -> None:
    """Bring the schema to the newest migration."""
    settings = _settings(data)
    _open(settings)
    typer.echo(f"database at {settings.db_url} is up to date")


def main() -> None:
    app()


# cases, opportunities, tasks, companies, preferences: they register on `app` themselves
# and import the helpers above, hence last.
from crmdrop import cli_integrations, cli_records  # noqa: E402, F401
