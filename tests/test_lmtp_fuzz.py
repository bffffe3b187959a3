"""A short, seeded LMTP dialogue fuzz against the running server's LMTP port (our own
protocol, `receive/lmtp.py`): random and malformed command sequences, huge lines, binary
and pipelining never meet an exception (no reply from one, none in the server's log),
and the port keeps serving (a real message is filed afterwards)."""

from __future__ import annotations

import random

import pytest

from tests.conftest import Crm
from tests.fuzzing import exception_replies, lmtp_dialogue, run_dialogue
from tests.support import lmtp_session, make_message


@pytest.mark.parametrize("crm", ["sqlite"], indirect=True)
def test_random_lmtp_dialogues_never_meet_an_exception_and_the_port_keeps_serving(
    crm: Crm,
) -> None:
    owner = crm.new_owner()
    rng = random.Random(20261130)
    logged = crm.server.log_path.stat().st_size
    for _ in range(40):
        chunks = lmtp_dialogue(rng, owner.dropbox["note"], owner.email)
        replies = run_dialogue(crm.lmtp, chunks)
        assert replies and replies[0].startswith("220"), replies[:3]
        broken = exception_replies(replies)
        assert not broken, (chunks, broken)
    msg = make_message(from_=owner.email, to=["jane@customer.example"], subject="after fuzz")
    result = lmtp_session(crm.lmtp, owner.email, [owner.dropbox["note"]], msg.as_bytes())
    assert result["data"][owner.dropbox["note"]].startswith("250 2.0.0")
    data = crm.settled(owner.account)
    assert "after fuzz" in [n["subject"] for n in data["notes"]]
    with crm.server.log_path.open("rb") as log:
        log.seek(logged)
        assert b"Traceback" not in log.read()
