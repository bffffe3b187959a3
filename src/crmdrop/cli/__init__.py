"""The `crmdrop` command. Users script it: the names and JSON shapes are a contract.

Every command finds the database from `--data DIR` or `CRMDROP_DATABASE_URL`, as
`serve` does, and brings the schema up to date first (cheap when it is).

One module per area; each defines its commands or sub-apps and imports only
`crmdrop.cli.common` (never this module), and they are put together here. To add a
command group: write `cli/<name>.py` with `<name>_app = typer.Typer(...)` and its commands,
then add one line to `GROUPS` below (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from crmdrop.cli import accounts, deliveries, explain, mta, records, server, tasks, users
from crmdrop.cli.common import close_on_exit

app = typer.Typer(no_args_is_help=True, add_completion=False, help="crmdrop: the CRM email dropbox")

# top-level commands, in `crmdrop --help` order
COMMANDS: list[Callable[..., None]] = [
    server.serve,
    server.worker,
    server.ingest,
    mta.imap,
    accounts.export,
    explain.explain,
]

# `crmdrop <group> <command>`
GROUPS: list[tuple[str, typer.Typer]] = [
    ("users", users.users_app),
    ("addresses", users.addresses_app),
    ("exclusions", accounts.exclusions_app),
    ("dropbox", users.dropbox_app),
    ("deliveries", deliveries.deliveries_app),
    ("db", deliveries.db_app),
    ("cases", records.cases_app),
    ("opportunities", records.opportunities_app),
    ("tasks", tasks.tasks_app),
    ("companies", tasks.companies_app),
    ("preferences", accounts.preferences_app),
    ("mta", mta.mta_app),
]

for _command in COMMANDS:
    app.command()(_command)
for _name, _group in GROUPS:
    app.add_typer(_group, name=_name)


@app.callback()
def _root(ctx: typer.Context) -> None:
    """Close every database a command opened when it ends (in-process callers run many)."""
    close_on_exit(ctx)


def main() -> None:
    app()
