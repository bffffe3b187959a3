"""Addresses: the lookup key, plausibility, header lists and addresses in free text."""

from __future__ import annotations

from crmdrop.mail.addresses import (
    extract_addresses_from_text,
    is_plausible_address,
    normalize_address,
    parse_address_list,
)
from crmdrop.mail.model import Mailbox


def test_normalize_lowercases_and_strips() -> None:
    assert normalize_address("  <John.Doe@Example.COM> ") == "john.doe@example.com"


def test_normalize_gives_one_form_for_punycode_and_unicode_domains() -> None:
    assert normalize_address("a@XN--BCHER-KVA.example") == "a@bücher.example"
    assert normalize_address("a@Bücher.example") == "a@bücher.example"


def test_plausible_addresses() -> None:
    assert is_plausible_address("jane@example.com")
    assert not is_plausible_address("jane@")
    assert not is_plausible_address("not an address")
    assert not is_plausible_address("a@b@c.com")


def test_names_with_commas_and_quotes_keep_their_own_address() -> None:
    got = parse_address_list('"Doe, John" <john@x.com>, "O\'Brien \\"Bob\\"" <bob@y.org>')
    assert got == [
        Mailbox("Doe, John", "john@x.com"),
        Mailbox('O\'Brien "Bob"', "bob@y.org"),
    ]


def test_an_address_in_the_name_does_not_replace_the_real_one() -> None:
    # CVE-2023-27043 shape: the angle address is the mailbox, not the one in the name.
    got = parse_address_list('"alice@evil.com" <bob@good.com>')
    assert got == [Mailbox("alice@evil.com", "bob@good.com")]


def test_outlook_mailto_decorations_are_read() -> None:
    assert parse_address_list("Jane Roe <jane@x.com<mailto:jane@x.com>>") == [
        Mailbox("Jane Roe", "jane@x.com")
    ]
    assert parse_address_list("Jane Roe [mailto:jane@x.com]") == [Mailbox("Jane Roe", "jane@x.com")]
    assert parse_address_list("jane@x.com [mailto:jane@x.com]") == [Mailbox("", "jane@x.com")]
    assert parse_address_list('"jane@x.com" <jane@x.com>') == [Mailbox("", "jane@x.com")]


def test_a_name_without_address_is_kept_as_a_name_only() -> None:
    assert parse_address_list("Jane Roe; John Smith") == [
        Mailbox("Jane Roe", None),
        Mailbox("John Smith", None),
    ]


def test_comment_style_names_and_groups() -> None:
    assert parse_address_list("jane@x.com (Jane Roe)") == [Mailbox("Jane Roe", "jane@x.com")]
    assert parse_address_list("Team: a@x.com, b@y.com;") == [
        Mailbox("", "a@x.com"),
        Mailbox("", "b@y.com"),
    ]
    assert parse_address_list("undisclosed-recipients:;") == []


def test_encoded_names_are_decoded_after_splitting() -> None:
    got = parse_address_list("=?utf-8?q?Doe=2C_J=C3=BCrgen?= <j@x.de>, k@y.de")
    assert got == [Mailbox("Doe, Jürgen", "j@x.de"), Mailbox("", "k@y.de")]


def test_text_addresses_include_mailto_and_skip_urls_cids_and_ids() -> None:
    text = (
        "Write to Jane Roe <jane@client.com> or <a href>mailto:sales%2Bq@client.com</a>.\n"
        "Logo: cid:image001.png@01D2A3B4.C5D6E7F0 and see https://host.com/u/bob@host.com/x\n"
        "Message-ID: <CAK7xyz=abc@mail.gmail.com>\n"
        "References: <12345.abc@server.example.com>\n"
        "image001.png@01D2A3B4.C5D6E7F0\n"
    )
    got = dict(extract_addresses_from_text(text))
    assert set(got) == {"jane@client.com", "sales+q@client.com"}
    assert got["jane@client.com"] == "Jane Roe"


def test_text_addresses_are_deduplicated_case_insensitively() -> None:
    got = extract_addresses_from_text("A@X.com and a@x.com and a@x.COM")
    assert got == [("a@x.com", "")]


def test_text_addresses_drop_outlook_single_quotes_but_keep_apostrophes() -> None:
    got = [a for a, _ in extract_addresses_from_text("To: 'jane@x.com'; ann.o'neil@x.co.uk")]
    assert got == ["jane@x.com", "ann.o'neil@x.co.uk"]
