"""The contacts search index: the words of each contact's name and of its addresses
(local parts and domains), lowercased, one row each in `contact_terms`.

A search word matches a contact when it begins one of its terms: a range read on an
index (`term >= w AND term < w + U+FFFF`), the same on SQLite and PostgreSQL. A rare
word (most searches) yields a few contact ids to read directly; a common one ("jo") is
checked per contact while walking the list in its order, which soon finds a page.
Either way a search does not scan every contact, as a `LIKE '%w%'` would.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import ColumnElement, and_, delete, exists, insert, select
from sqlalchemy.orm import Session

from crmdrop.store.models import Contact, ContactEmail, contact_terms

_WORD = re.compile(r"\w+")
_TOP = "\uffff"
MAX_TERM = 320


def terms_of(name: str, emails: Iterable[str]) -> set[str]:
    """What a contact can be found by: the words of its name and of each address (local
    part and domain).

    Not the whole address nor the whole domain: a search is split into words (`_words`),
    and a word, which holds no `@` or `.`, begins "jane.doe@client.example" only where it
    begins "jane", a term already. Those two rows per contact found nothing more, and each
    row is written on the filing path (issue #12). Only a search with no letter or digit
    at all ("+", "%") could begin a whole address ("+x@…") and no word; it finds no one.
    (Contacts indexed before keep those rows; they are harmless.)"""
    out = set(_WORD.findall(name.lower()))
    for email in emails:
        out.update(_WORD.findall(email.lower()))
    return {t[:MAX_TERM] for t in out if t}


def contact_term_rows(
    account_id: int, contact_id: int, name: str, emails: Iterable[str]
) -> list[dict[str, int | str]]:
    """A new contact's `contact_terms` rows (for `index_contact`, or a batch's inserts)."""
    return [
        {"account_id": account_id, "term": t, "contact_id": contact_id}
        for t in sorted(terms_of(name, emails))
    ]


def index_contact(
    session: Session, account_id: int, contact_id: int, name: str, emails: Iterable[str]
) -> None:
    """Add a new contact's terms (nothing indexed for it yet)."""
    rows = contact_term_rows(account_id, contact_id, name, emails)
    if rows:
        session.execute(insert(contact_terms), rows)


def reindex_contact(session: Session, contact_id: int) -> None:
    """Rebuild a contact's terms from its current name and addresses."""
    session.execute(delete(contact_terms).where(contact_terms.c.contact_id == contact_id))
    contact = session.get(Contact, contact_id)
    if contact is None:
        return
    emails = session.scalars(
        select(ContactEmail.email).where(ContactEmail.contact_id == contact_id)
    )
    index_contact(session, contact.account_id, contact_id, contact.name, list(emails))


CANDIDATES = 2_000  # fewer matches than this: read them by id; more: walk the list order


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower()) or [text.strip().lower()]


def _prefix(word: str) -> ColumnElement[bool]:
    return and_(contact_terms.c.term >= word, contact_terms.c.term < word + _TOP)


def candidates(session: Session, account_id: int, text: str) -> list[int] | None:
    """The ids of the contacts whose terms the *rarest* word of `text` begins, when there
    are few of them (None when every word is common: then `matching` walks the list)."""
    best: list[int] | None = None
    for word in _words(text):
        ids = list(
            session.scalars(
                select(contact_terms.c.contact_id)
                .where(contact_terms.c.account_id == account_id, _prefix(word))
                .distinct()
                .limit(CANDIDATES)
            )
        )
        if len(ids) < CANDIDATES and (best is None or len(ids) < len(best)):
            best = ids
    return best


def matching(text: str) -> ColumnElement[bool]:
    """Contacts every word of `text` begins a term of (name word, address, domain): one
    index probe per contact and word, on (contact, term). The caller scopes the contacts
    to the account."""
    return and_(
        *(
            exists().where(contact_terms.c.contact_id == Contact.id, _prefix(word))
            for word in _words(text)
        )
    )
