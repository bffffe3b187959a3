"""The column types that make SQLite store what PostgreSQL would: no NUL in JSON values."""

from __future__ import annotations

from crmdrop.store.models import CleanJSON


def test_clean_json_removes_every_nul_and_keeps_the_rest_as_it_is() -> None:
    bind = CleanJSON().process_bind_param
    assert bind({"a\x00": ["x\x00y", 1, {"k": "v\x00"}]}, None) == {"a": ["xy", 1, {"k": "v"}]}
    plain = {"reason": "filed", "ids": [1, 2], "text": "a written-out \\u0000 stays"}
    assert bind(plain, None) == plain
    assert bind(None, None) is None
