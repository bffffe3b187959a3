"""`column IN (list)` whose SQL text does not depend on the list's length.

SQLAlchemy's expanding `IN` renders one placeholder per value at execution, so every
batch size is a different statement text: rendered again for each execution, and on
PostgreSQL never prepared by psycopg (which prepares a text after it has run
`prepare_threshold` times). On PostgreSQL this renders `column = ANY(:name::type[])`,
one text for any length; on SQLite (which has no arrays, and whose statements cost
microseconds to prepare) it stays the expanding `IN`. The choice is made at compile
time by dialect, so one statement object serves both backends (docs/performance.md,
"Session 5, second round on PostgreSQL"). `each_of` gives such a list as rows
(PostgreSQL only), for a look-up per value that no statistics can make a scan.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    String,
    TableValuedAlias,
    Text,
    any_,
    bindparam,
    cast,
    column,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType
from sqlalchemy.types import TypeDecorator, TypeEngine


class InList(ColumnElement[bool]):
    """`column` is one of the values bound as `name` (a list, at execution)."""

    type = Boolean()
    inherit_cache = True
    # A comparison, not a boolean value: without this SQLAlchemy renders it in a WHERE
    # on SQLite (no native boolean) as `(x IN (...)) = 1`, which no index can answer —
    # every contact scanned per batch (bench_filing, SQLite, 1M contacts: 628 → 49/s).
    _is_implicitly_boolean = True
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012 (SQLAlchemy's protocol)
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


def in_list(column: ColumnElement[Any] | QueryableAttribute[Any], name: str) -> InList:
    """`column IN (:name...)` on SQLite, `column = ANY(:name)` on PostgreSQL."""
    if isinstance(column, QueryableAttribute):
        return InList(column.__clause_element__(), name)
    return InList(column, name)


def each_of(name: str, item: TypeEngine[Any], alias: str) -> TableValuedAlias:
    """PostgreSQL: the list bound as `name` as rows, `unnest(CAST(:name AS type[])) AS
    alias(value)`, for a look-up per value (a subquery per row, or a LATERAL one), an
    index condition whatever the statistics say: with `= ANY`, statistics of a nearly
    empty table can make the list a filter over all of an account's rows."""
    array = cast(bindparam(name, type_=ArrayText(item)), ARRAY(item))
    return func.unnest(array).table_valued(column("value", item)).render_derived(name=alias)


@compiles(InList)
def _in_expanding(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(InList, "postgresql")
def _any_array(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    item = element.column.type
    array_type = ARRAY(item)
    base = item.impl_instance if isinstance(item, TypeDecorator) else item
    if isinstance(base, Integer | String):  # bound as the array's text, cast by the server
        array: Any = cast(bindparam(element.name, type_=ArrayText(item)), array_type)
    else:
        array = bindparam(element.name, type_=array_type)
    return compiler.process(element.column == any_(array), **kw)


class ArrayText(TypeDecorator[list[Any]]):
    """A list of integers or strings bound as the text of a PostgreSQL array
    (`{1,2}`, `{"a","b"}`), for `CAST(:name AS type[])`. psycopg's list dumper is Python
    that looks up a dumper per element: 32 ids ≈ 75 µs and 64 addresses ≈ 150 µs of CPU
    per statement on this machine, the text ≈ 15–30 µs; SQLAlchemy's ARRAY processor
    walked each list once more (docs/performance.md, session 6). Each value goes through
    the column type's own bind processor first (`CleanString`: no NUL, cut to length)."""

    impl = Text
    cache_ok = True

    def __init__(self, item: TypeEngine[Any]) -> None:
        super().__init__()
        self.item = item

    def bind_processor(self, dialect: Dialect) -> Any:
        each = self.item._cached_bind_processor(dialect)

        def process(values: list[Any] | None) -> str | None:
            if values is None:
                return None
            if each is not None:
                values = [each(v) for v in values]
            return "{" + ",".join(map(_element, values)) + "}"

        return process


def _element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(int(value))
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
