"""A short, seeded SMTP dialogue fuzz against the running server: random and malformed
command sequences, huge lines, binary and pipelining never get a reply that comes from an
exception, and the server keeps serving (a real message is filed afterwards). The long
run is `bench/fuzz_smtp.py`."""

from __future__ import annotations

import random

import pytest

from tests.conftest import Crm
from tests.fuzzing import exception_replies, run_dialogue, smtp_dialogue
from tests.support import make_message, smtp_send


@pytest.mark.parametrize("crm", ["sqlite"], indirect=True)
def test_random_dialogues_never_meet_an_exception_and_the_server_keeps_serving(
    crm: Crm,
) -> None:
    owner = crm.new_owner()
    rng = random.Random(20261130)
    for _ in range(30):
        chunks = smtp_dialogue(rng, owner.dropbox["note"], owner.email)
        replies = run_dialogue(crm.smtp, chunks)
        assert replies and replies[0].startswith("220"), replies[:3]
        broken = exception_replies(replies)
        assert not broken, (chunks, broken)
    msg = make_message(from_=owner.email, to=["jane@customer.example"], subject="after fuzz")
    assert smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], msg) == {}
    data = crm.settled(owner.account)
    assert "after fuzz" in [n["subject"] for n in data["notes"]]
