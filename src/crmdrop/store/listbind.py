"""`column IN (list)` whose SQL text does not depend on the list's length.

SQLAlchemy's expanding `IN` renders one placeholder per value at execution, so every
batch size is a different statement text: rendered again for each execution, and on
PostgreSQL never prepared by psycopg (which prepares a text after it has run
`prepare_threshold` times). On PostgreSQL this renders `column = ANY(:name::type[])`,
one text for any length; on SQLite (which has no arrays, and whose statements cost
microseconds to prepare) it stays the expanding `IN`. The choice is made at compile
time by dialect, so one statement object serves both backends (docs/performance.md,
"Session 5, second round on PostgreSQL").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType


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


@compiles(InList)
def _in_expanding(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(InList, "postgresql")
def _any_array(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    array = bindparam(element.name, type_=ARRAY(element.column.type))
    return compiler.process(element.column == any_(array), **kw)
