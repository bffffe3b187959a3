"""Schemathesis against the live OpenAPI document of a running `crmdrop serve` (SQLite and
PostgreSQL): generated requests, valid and not, never get a 5xx, and every response
matches the schema. Bounded (a few examples per operation, fixed seed) to stay quick."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import Crm
from tests.support import make_message, smtp_send

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_generated_requests_get_no_5xx_and_responses_match_the_schema(
    crm: Crm, tmp_path: Path
) -> None:
    owner = crm.new_owner()
    smtp_send(
        crm.smtp,
        owner.email,
        [owner.dropbox["case"]],
        make_message(from_=owner.email, to=["gen@client.example"], subject="Generated"),
    )
    crm.settled(owner.account)
    token = crm.cli.json("tokens", "create", owner.email, "--name", "fuzz", "--json")["token"]
    base = f"http://127.0.0.1:{crm.server.http_port}/api/v1"
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{base}/openapi.json",
            "--url",
            base,
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            "4",
            "--seed",
            "20261130",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
        ],
        cwd=tmp_path,  # its cache and reports stay out of the source tree
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
