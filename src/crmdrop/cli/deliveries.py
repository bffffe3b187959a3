"""`crmdrop deliveries|db`: the processing records, and the schema."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from crmdrop.cli.common import Data, JsonFlag, emit, fail, open_db, settings_for, store
from crmdrop.store.deliveries import list_deliveries, raw_message, show_delivery
from crmdrop.store.inbound import retry, retry_all_failed

deliveries_app = typer.Typer(no_args_is_help=True, help="Processing records.")
db_app = typer.Typer(no_args_is_help=True, help="The database.")


@deliveries_app.command("list")
def deliveries_list(
    account: Annotated[str | None, typer.Option("--account")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: JsonFlag = False,
    data: Data = None,
) -> None:
    """The newest processing records, optionally of one account or status."""
    with store(data) as (_, session):
        rows = list_deliveries(session, account=account, status=status, limit=limit)
    if as_json:
        emit(rows)
        return
    for r in rows:
        typer.echo(
            f"#{r['id']:<6} {r['received_at'][:19]} {r['dropbox']:<8} {r['status']:<10} "
            f"{r['subject'][:40]!r:<44} {r['reason'][:80]}"
        )


@deliveries_app.command("show")
def deliveries_show(delivery_id: int, data: Data = None) -> None:
    """One processing record with its full decision (JSON)."""
    with store(data) as (_, session):
        emit(show_delivery(session, delivery_id))


@deliveries_app.command("raw")
def deliveries_raw(delivery_id: int, data: Data = None) -> None:
    """Write the message exactly as it was received to stdout (an .eml)."""
    with store(data) as (_, session):
        raw = raw_message(session, delivery_id)
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()


@deliveries_app.command("retry")
def deliveries_retry(
    delivery_id: Annotated[int | None, typer.Argument()] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed")] = False,
    data: Data = None,
) -> None:
    """Queue a parked delivery again (or every failed one)."""
    now = datetime.now(UTC)
    if not all_failed and delivery_id is None:
        fail("give a delivery id or --all-failed")
    with store(data, write=True) as (_, session):
        if all_failed:
            count = retry_all_failed(session, now=now)
        else:
            assert delivery_id is not None
            try:
                retry(session, delivery_id, now=now)
            except LookupError as exc:
                fail(str(exc))
    if all_failed:
        typer.echo(f"queued {count} failed deliveries again")
    else:
        typer.echo(f"delivery #{delivery_id} queued again")


@db_app.command("upgrade")
def db_upgrade(data: Data = None) -> None:
    """Bring the schema to the newest migration."""
    settings = settings_for(data)
    open_db(settings)
    typer.echo(f"database at {settings.db_url} is up to date")
