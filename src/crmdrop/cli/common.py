"""What every `crmdrop` command shares: the `--data`/`--json` options, opening the
database, a command's transaction, printing JSON, failing with a message.

Command modules import from here and never from each other or from `crmdrop.cli`
itself, so the package has no import cycle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy.orm import Session

from crmdrop.config import Settings, load_settings
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.models import Account, User
from crmdrop.store.serialize import user_json

__all__ = [
    "AccountOpt",
    "Data",
    "JsonFlag",
    "close_on_exit",
    "emit",
    "fail",
    "open_db",
    "print_user",
    "settings_for",
    "store",
    "user_shape",
]

Data = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory (SQLite lives there). Default ./crmdrop-data."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AccountOpt = Annotated[str, typer.Option("--account", help="The account's name.")]


def settings_for(data: Path | None, **overrides: Any) -> Settings:
    """The settings a command runs with: `--data` and flags over env, TOML, defaults."""
    return load_settings(data_dir=data, **overrides)


_OPENED: ContextVar[list[Database] | None] = ContextVar("crmdrop_opened", default=None)


def close_on_exit(ctx: typer.Context) -> None:
    """Close every database a command opened when it ends (in-process callers run many)."""
    opened: list[Database] = []
    _OPENED.set(opened)

    def close() -> None:
        for db in opened:
            db.dispose()

    ctx.call_on_close(close)


def open_db(settings: Settings) -> Database:
    """The database, migrated, and closed again when the command ends."""
    db = Database(settings.db_url)
    opened = _OPENED.get()
    if opened is not None:
        opened.append(db)
    db.migrate()
    return db


@contextmanager
def store(data: Path | None, *, write: bool = False) -> Iterator[tuple[Settings, Session]]:
    """A command's transaction: opened, committed (or rolled back), and a refusal of the
    store's (`StoreError`) turned into its message on stderr and exit code 1."""
    settings = settings_for(data)
    db = open_db(settings)
    try:
        with db.writing() if write else db.reading() as session:
            yield settings, session
    except accounts.StoreError as exc:
        fail(str(exc))


def fail(message: str, code: int = 1) -> NoReturn:
    """`crmdrop: <message>` on stderr, and the exit code."""
    typer.echo(f"crmdrop: {message}", err=True)
    raise typer.Exit(code)


def emit(value: Any) -> None:
    """Print JSON the way every `--json` does (indented, UTF-8, dates as strings)."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def user_shape(session: Session, user: User, domain: str) -> dict[str, Any]:
    """The shape `users add`, `users show` and `dropbox regenerate` print with --json."""
    account = session.get(Account, user.account_id)
    assert account is not None
    return user_json(user, account=account.name, domain=domain)


def print_user(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(data)
        return
    typer.echo(f"user {data['email']} (account {data['account']})")
    for kind, address in data["dropbox"].items():
        typer.echo(f"  {kind:<9} {address}")
