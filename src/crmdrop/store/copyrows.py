"""Rows inserted by binary `COPY` on PostgreSQL: the filing batch's rows (`BatchWrites`).

psycopg sends an executemany as a pipeline, one Bind/Execute per row, each row prepared
for it by Python code (SQLAlchemy's parameters, psycopg's per-row query and dumps): ≈ 25
µs of the worker's CPU per row on this machine, for the ten rows a filing writes. A
binary COPY of the same rows is one statement whose rows psycopg's C code writes:
≈ 4–9 µs a row, and less work for the server (docs/performance.md, session 6).

The values go through the same SQLAlchemy bind processors (`CleanString`'s scrub and
cut, `UTCDateTime`, `CleanJSON`) and the columns' Python defaults as an INSERT's; the
types come from the catalog (`format_type` of each column). An error is raised as
SQLAlchemy's (`DBAPIError.instance`): a unique key another worker took is still an
`IntegrityError` with its table, which the worker retries at once (`is_known_race`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Table, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from crmdrop.store.blobs import driver_connection

# The catalog's type names that binary COPY writes with psycopg's dumper of this type
# (varchar's binary form is text's). Any other type: the caller inserts as before.
_COPY_TYPES = {
    "integer": "int4",
    "bigint": "int8",
    "smallint": "int2",
    "text": "text",
    "character varying": "text",
    "boolean": "bool",
    "timestamp with time zone": "timestamptz",
    "date": "date",
    "json": "json",
    "jsonb": "jsonb",
    "bytea": "bytea",
}
_COLUMN_TYPES = text(
    "SELECT attname, regexp_replace(format_type(atttypid, atttypmod), '\\(.*\\)$', '') "
    "FROM pg_attribute WHERE attrelid = CAST(:table AS regclass) "
    "AND attnum > 0 AND NOT attisdropped"
)


@dataclass(frozen=True)
class _Column:
    name: str
    copy_type: str
    process: Callable[[Any], Any] | None
    default: Any  # the value when a row leaves the column out (its Python default)


@dataclass(frozen=True)
class _CopyPlan:
    """How rows with these keys are copied into a table (built once per process)."""

    sql: str
    types: tuple[str, ...]
    given: tuple[_Column, ...]  # from each row
    defaults: tuple[Any, ...]  # the columns left out, with their Python default


_PLANS: dict[tuple[str, frozenset[str]], _CopyPlan | None] = {}


def copy_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> bool:
    """Insert `rows` (dicts with the same keys) by binary COPY; False when this table's
    types or the rows' keys are not ones COPY is used for (nothing written then)."""
    keys = frozenset(rows[0])
    if any(row.keys() != keys for row in rows):
        return False
    plan = _plan(session, table, keys)
    if plan is None:
        return False
    try:
        with (
            driver_connection(session).cursor() as cursor,
            cursor.copy(plan.sql) as copy,
        ):
            copy.set_types(list(plan.types))
            for row in rows:
                copy.write_row(_values(plan, row))
    except psycopg.Error as exc:  # as an INSERT's error would be
        raise DBAPIError.instance(plan.sql, None, exc, psycopg.Error) from exc
    return True


def _values(plan: _CopyPlan, row: dict[str, Any]) -> list[Any]:
    values = [row[c.name] if c.process is None else c.process(row[c.name]) for c in plan.given]
    values.extend(plan.defaults)
    return values


def _plan(session: Session, table: Table, keys: frozenset[str]) -> _CopyPlan | None:
    key = (table.name, keys)
    if key not in _PLANS:
        found = session.execute(_COLUMN_TYPES, {"table": table.name})
        types: dict[str, str] = {name: kind for name, kind in found}
        _PLANS[key] = _build(table, keys, types, session.get_bind().dialect)
    return _PLANS[key]


def _build(
    table: Table, keys: frozenset[str], types: dict[str, str], dialect: Dialect
) -> _CopyPlan | None:
    given: list[_Column] = []
    left_out: list[_Column] = []
    for column in table.columns:
        if column.name not in keys and column.default is None:
            continue  # the server's default (a sequence) or NULL, as an INSERT leaves it
        copy_type = _COPY_TYPES.get(types.get(column.name, ""))
        default = column.default
        if copy_type is None or (column.name not in keys and not default.is_scalar):  # type: ignore[union-attr]
            return None
        process = column.type._cached_bind_processor(dialect)
        if column.name in keys:
            given.append(_Column(column.name, copy_type, process, None))
        else:
            value = default.arg  # type: ignore[union-attr]
            left_out.append(
                _Column(column.name, copy_type, None, process(value) if process else value)
            )
    if len(given) != len(keys):
        return None  # a key that is no column: let the INSERT say so
    columns = [*given, *left_out]
    names = ", ".join(f'"{c.name}"' for c in columns)
    return _CopyPlan(
        sql=f'COPY "{table.name}" ({names}) FROM STDIN (FORMAT BINARY)',
        types=tuple(c.copy_type for c in columns),
        given=tuple(given),
        defaults=tuple(c.default for c in left_out),
    )
