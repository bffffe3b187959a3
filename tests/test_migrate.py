"""Only `crmdrop migrate` and `serve` (once, at start) upgrade the schema; every other
command checks it and stops with a clear message when it is behind (issue #11). And the
demo account is made only while every listener is on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from crmdrop.cli import app
from crmdrop.store.db import Database
from tests.conftest import SERVER_ENV
from tests.support import Cli, free_port


def test_commands_refuse_a_database_behind_and_migrate_brings_it_up(tmp_path: Path) -> None:
    cli = Cli({**SERVER_ENV, "CRMDROP_DATA_DIR": str(tmp_path)})
    refused = cli.runner.invoke(
        app,
        ["users", "add", "a@mycorp.example", "--name", "A", "--account", "acme"],
        env=cli.env,
    )
    assert refused.exit_code == 75
    assert "crmdrop migrate" in refused.output and "empty database" in refused.output
    piped = subprocess.run(
        [sys.executable, "-m", "crmdrop", "ingest", "--to", "dropbox-x@dropbox.test"],
        input=b"From: a@b.example\r\n\r\nhi\r\n",
        env={**os.environ, **cli.env},
        capture_output=True,
        check=False,
    )
    assert piped.returncode == 75  # the MTA keeps the message and retries
    db = Database(f"sqlite:///{tmp_path / 'crmdrop.db'}")
    try:
        assert db.revision() is None  # nobody upgraded it behind our back
        assert "up to date" in cli.run("migrate")
        assert db.revision() is not None
    finally:
        db.dispose()
    cli.run("users", "add", "a@mycorp.example", "--name", "A", "--account", "acme")


def _serve_once(data_dir: Path, smtp_host: str) -> tuple[str, list[str]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "crmdrop",
        "serve",
        "--no-worker",
        "--data",
        str(data_dir),
        "--smtp",
        f"{smtp_host}:{free_port()}",
        "--lmtp",
        f"127.0.0.1:{free_port()}",
        "--http",
        f"127.0.0.1:{free_port()}",
    ]
    proc = subprocess.Popen(
        args,
        env={**os.environ, **SERVER_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        lines.append(raw.decode())
        if "crmdrop is up" in lines[-1]:
            break
    proc.terminate()
    proc.wait(timeout=30)
    db = Database(f"sqlite:///{data_dir / 'crmdrop.db'}")
    try:
        with db.reading() as session:
            users = list(session.scalars(sa.text("SELECT email FROM users")))
    finally:
        db.dispose()
    return "".join(lines), users


def test_the_demo_account_is_made_on_loopback_only(tmp_path: Path) -> None:
    output, users = _serve_once(tmp_path / "public", "0.0.0.0")
    assert "no demo account" in output and "0.0.0.0" in output
    assert users == []
    output, users = _serve_once(tmp_path / "loopback", "127.0.0.1")
    assert "demo account: sign in at" in output and "demo@example.com" in output
    assert users == ["demo@example.com"]
