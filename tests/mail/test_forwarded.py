"""The generic forwarded/quoted block matcher: nesting, wrapping, decorations, false alarms."""

from __future__ import annotations

from crmdrop.mail.forwarded import (
    find_forwarded_blocks,
    find_forwarded_blocks_html,
    split_own_text,
)
from crmdrop.mail.labels import FIELD_LABELS
from crmdrop.mail.model import Mailbox
from crmdrop.mail.parse import parse_message

NESTED = """FYI, see below.

---------- Forwarded message ---------
From: Middle Man <middle@partner.example>
Date: Wed, Mar 6, 2024 at 9:00 AM
Subject: Fwd: Angebot
To: Me <me@ourco.example>

Passing this on.

-----Ursprüngliche Nachricht-----
Von: "Eins, Kunde" <customer@client.example>
Gesendet: Dienstag, 5. März 2024 14:30
An: Middle Man <middle@partner.example>; 'Anna Beta' <anna@partner.example>
Cc: Carla Copy
Betreff: Angebot

Das Original.

On Mon, Mar 4, 2024 at 8:00 AM Sales Team <sales@ourco.example> wrote:
> first question
"""


def test_nested_forwards_give_every_level_outermost_first() -> None:
    blocks = find_forwarded_blocks(NESTED)
    assert [b.depth for b in blocks] == [1, 2, 3]
    one, two, three = blocks
    assert one.from_ == Mailbox("Middle Man", "middle@partner.example")
    assert [m.address for m in one.to] == ["me@ourco.example"]
    assert one.body == "Passing this on."
    assert one.subject == "Fwd: Angebot"
    assert two.from_ == Mailbox("Eins, Kunde", "customer@client.example")
    assert [m.address for m in two.to] == ["middle@partner.example", "anna@partner.example"]
    assert two.to[1].name == "Anna Beta"
    assert two.cc == (Mailbox("Carla Copy", None),)
    assert two.language == "de"
    assert two.date is not None and (two.date.day, two.date.hour) == (5, 14)
    assert two.body == "Das Original."
    assert three.kind == "reply"
    assert three.from_ == Mailbox("Sales Team", "sales@ourco.example")


def test_wrapped_header_lines_are_joined() -> None:
    text = (
        "Hi\n\n-----Original Message-----\n"
        "From: Kunde Eins\n <customer@client.example>\n"
        "Sent: Tuesday, March 5, 2024 2:30 PM\n"
        "To: Sales Team <sales@ourco.example>, Anna Beta <anna@partner.example>,\n"
        "    Bob Gamma <bob@partner.example>\n"
        "Subject: A subject long enough that the client wrapped it onto\n"
        "the next line\n"
        "\nBody\n"
    )
    [block] = find_forwarded_blocks(text)
    assert block.from_ == Mailbox("Kunde Eins", "customer@client.example")
    assert [m.address for m in block.to] == [
        "sales@ourco.example",
        "anna@partner.example",
        "bob@partner.example",
    ]
    assert block.subject == "A subject long enough that the client wrapped it onto the next line"


def test_outlook_mailto_decorations_in_blocks() -> None:
    text = (
        "See below\n\n________________________________\n"
        "From: Kunde Eins <customer@client.example<mailto:customer@client.example>>\n"
        "Sent: Tuesday, March 5, 2024 2:30 PM\n"
        "To: sales@ourco.example [mailto:sales@ourco.example]\n"
        'Cc: "carla@client.example" <carla@client.example>\n'
        "Subject: RE: Angebot\n\nBody\n"
    )
    [block] = find_forwarded_blocks(text, subject="FW: Angebot")
    assert block.kind == "forward"
    assert block.from_ == Mailbox("Kunde Eins", "customer@client.example")
    assert block.to == (Mailbox("", "sales@ourco.example"),)
    assert block.cc == (Mailbox("", "carla@client.example"),)


def test_bold_plain_text_labels_and_names_without_address() -> None:
    text = (
        "top\n\n*From:* Outlook User\n*Sent:* 2016-01-27\n*To:* info@client.example\n"
        "*Subject:* Question\n\nbody\n"
    )
    [block] = find_forwarded_blocks(text)
    assert block.from_ == Mailbox("Outlook User", None)
    assert [m.address for m in block.to] == ["info@client.example"]


def test_prose_with_label_words_is_not_a_block() -> None:
    text = (
        "From: the start we agreed on a price.\n"
        "Subject: to approval, of course.\n"
        "On Monday we talk again: see you then.\n"
        "Original message follows in the next mail.\n"
    )
    assert find_forwarded_blocks(text) == []


def test_a_reply_header_yields_addresses_with_where() -> None:
    raw = (
        b"From: me@ourco.example\nTo: drop@crm.example\nSubject: Re: Angebot\n\n"
        b"Thanks!\n\nOn Tue, Mar 5, 2024 at 2:30 PM Kunde Eins <customer@client.example> wrote:\n"
        b"> question\n"
    )
    parsed = parse_message(raw)
    assert parsed.own_text == "Thanks!"
    assert ("customer@client.example", "forwarded[1]:from") in {
        (a.address, a.where) for a in parsed.addresses
    }


def test_own_text_drops_signature_and_keeps_text_below_a_quoted_forward() -> None:
    text = (
        "Top words\n\n-- \nMe, Sales\n\nBegin forwarded message:\n\n"
        "> From: Kunde Eins <customer@client.example>\n> Date: 5 March 2024 at 14:30\n"
        "> To: sales@ourco.example\n> Subject: Angebot\n>\n> Original\n\nBottom words\n"
    )
    own, [block] = split_own_text(text)
    assert own == "Top words\n\nBottom words"
    assert block.body == "Original"


def test_html_counterpart_reads_blockquotes_and_unescaped_addresses() -> None:
    html = (
        "<div>Thanks</div><div>On Sep 4, 2025, at 11:30 AM, Jane Roe <jane@client.example> wrote:"
        "</div><blockquote type='cite'><div>Hello</div></blockquote>"
    )
    [block] = find_forwarded_blocks_html(html)
    assert block.from_ == Mailbox("Jane Roe", "jane@client.example")
    assert block.body == "Hello"


def test_no_label_is_claimed_by_two_fields() -> None:
    owner: dict[str, str] = {}
    for fields in FIELD_LABELS.values():
        for fld, labels in fields.items():
            for label in labels:
                key = label.rstrip(":").casefold()
                assert owner.setdefault(key, fld) == fld, (label, owner[key], fld)


def test_a_100kb_forwarded_message_is_read_whole() -> None:
    """(Its speed is measured by bench/bench_parse.py, not asserted here.)"""
    body = (
        "Please file.\n\n---------- Forwarded message ---------\n"
        "From: Kunde Eins <customer@client.example>\nDate: Tue, Mar 5, 2024 at 2:30 PM\n"
        "Subject: Angebot\nTo: sales@ourco.example\n\n"
        + "A long line of ordinary words in the forwarded original, nothing special. "
        * 1400
    )
    raw = ("From: me@ourco.example\nSubject: Fwd: Angebot\n\n" + body).encode()
    assert len(raw) > 100_000
    parsed = parse_message(raw)
    assert parsed.forwarded[0].from_ == Mailbox("Kunde Eins", "customer@client.example")
    assert parsed.forwarded[0].body.endswith("nothing special.")


def test_bottom_posted_reply_words_are_the_authors_own_text() -> None:
    text = "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi\nHello back\n"
    own, [block] = split_own_text(text)
    assert own == "Hello back"
    assert block.from_ == Mailbox("Megan One", None)
    assert block.body == "Hi"


def test_a_greeting_line_above_a_wrapped_wrote_line_stays_own_text() -> None:
    text = 'Hello\n02.04.2012 14:20 пользователь "Bob" <\nbob@client.example> написал:\n\n> Hi\n'
    own, [block] = split_own_text(text)
    assert own == "Hello"
    assert block.from_ == Mailbox("Bob", "bob@client.example")
    assert block.date is not None and (block.date.month, block.date.day) == (4, 2)


def test_the_fast_label_and_separator_tests_accept_exactly_what_the_full_patterns_read() -> None:
    """The per-line gates (tries) must never disagree with the patterns they stand for."""
    import re

    from crmdrop.mail import forwarded as fw
    from crmdrop.mail.labels import SEPARATORS

    full_sep = re.compile(
        r"^"
        + fw._SEP_DECOR
        + "(?:"
        + "|".join(
            re.escape(p).replace(r"\ ", r"\s+") for rows in SEPARATORS.values() for p, _, _ in rows
        )
        + ")",
        re.IGNORECASE,
    )
    words = [lbl for row in FIELD_LABELS.values() for ls in row.values() for lbl in ls]
    words += [p for rows in SEPARATORS.values() for p, _, _ in rows]
    lines = {"", "Hello there:", "From the desk of Jane: hi", "Fromage: brie"}
    for word in words:
        for w in (word, word.upper(), word.lower(), word.replace(" ", " \t ")):
            for shape in (
                "{}: x",
                "*{}:* x",
                "**{}** : x",
                "_{}_：y",
                "--- {} ---",
                "{}x: y",
                "{}",
            ):
                line = shape.format(w)
                lines |= {line, line[:-1], line[1:]}
    for line in lines:
        assert fw._is_label_line(line) == bool(fw._LABEL_LINE.match(line)), line
        assert bool(fw._SEP_ANY.match(line)) == bool(full_sep.match(line)), line


def test_the_first_character_test_lets_through_every_line_the_separator_gate_reads() -> None:
    """The scan asks `_SEP_GATE` only of lines whose first character `_MAY_SEPARATE`
    admits: every separator phrase, its first letter in each case any code point folds
    to (as `re` folds it), after each decoration, and the underscore and Notes lines."""
    import sys

    from crmdrop.mail import forwarded as fw
    from crmdrop.mail.labels import SEPARATORS

    phrases = [p for rows in SEPARATORS.values() for p, _, _ in rows]
    firsts = {p[0] for p in phrases}
    by_form: dict[str, set[str]] = {}
    for c in firsts:
        for form in (c.lower(), c.upper(), c.casefold()):
            by_form.setdefault(form, set()).add(c)
    variants: dict[str, set[str]] = {c: {c} for c in firsts}
    for point in range(sys.maxunicode + 1):
        x = chr(point)
        for form in (x.lower(), x.upper(), x.casefold()):
            for c in by_form.get(form, ()):
                variants[c].add(x)
    lines = ["_" * 12, "----- Forwarded by Jane Doe/ACME on 03/15/2021 10:22 AM -----"]
    for phrase in phrases:
        for x in variants[phrase[0]]:
            rest = x + phrase[1:]
            lines += [rest, rest.upper(), rest.lower()]
            lines += [f"{decor}{rest} {decor}" for decor in ("-----", "__", "=", "*", "~", "#")]
            lines += [f"{decor}{rest}" for decor in ("<", ">", "[", "]", "- ")]
    gated = [line for line in lines if fw._SEP_GATE.match(line)]
    assert len(gated) > len(phrases)  # the lines are ones the gate reads
    for line in gated:
        assert fw._MAY_SEPARATE[line[0]], line
