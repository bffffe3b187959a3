"""Every email of ../shared/corpora through parse *and* decide, against a real
database and a real user: no unhandled exception anywhere (issue #2).

The sender check would refuse nearly all of them (their authors are not our
user), so `decide` is called directly: the point is that it copes with any input.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from crmdrop.dropbox.decide import decide
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.mail.parse import parse_message
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.models import Account
from crmdrop.store.view import SqlAccountView
from tests.corpora_util import iter_corpus_emails


def test_every_corpus_email_goes_through_parse_and_decide(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'corpus.db'}")
    db.migrate()
    with db.writing() as session:
        accounts.add_user(session, "owner@mycorp.example", name="O", account="corpus")
        accounts.add_exclusion(session, "corpus", "@example.com")
    read = with_address = 0
    outcomes: dict[str, int] = {}
    now = datetime.now(UTC)
    with db.reading() as session:
        owner = accounts.user_info(session, accounts.get_user(session, "owner@mycorp.example"))
        account = accounts.get_account(session, "corpus")
        assert isinstance(account, Account)
        view = SqlAccountView(session, account)
        for _path, raw in iter_corpus_emails():
            read += 1
            parsed = parse_message(raw)
            if parsed.addresses:
                with_address += 1
            for kind in (DropboxKind.NOTE, DropboxKind.CASE, DropboxKind.TODAY):
                plan = decide(parsed, kind, owner, view, dropbox_domain="dropbox.test", now=now)
                plan.to_json()
                outcomes[plan.outcome.value] = outcomes.get(plan.outcome.value, 0) + 1
    db.dispose()
    print(
        f"\ncorpora: {read} emails read, {with_address} with at least one address; "
        f"decisions (note, case and today dropboxes): {outcomes}"
    )
    assert read > 900
    # Measured 713 of 979 (many corpus files are bare reply bodies without headers):
    # a fall below two thirds means address extraction broke.
    assert with_address > read * 2 / 3
    assert sum(outcomes.values()) == read * 3
