"""Addresses: the lookup key, plausibility, header lists and addresses in free text."""

from __future__ import annotations

import itertools

import email_validator
from hypothesis import given, settings
from hypothesis import strategies as st

from crmdrop.mail import addresses
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


# The verdict of `is_plausible_address` comes from email-validator, in part per domain
# (`addresses._syntax_error`): it must be email-validator's own, address by address.
_LOCALS = ["a", "jane.doe", "x+y", "-", "a..b", ".a", "a.", "INFO", "o'brien", "a" * 64]
_LOCALS += ["a" * 200, "a b", "ü", '"q"', "a!#$%&'*/=?^_`{|}~", ""]
_DOMAINS = ["example.com", "x.test", "test", "localhost", "a.local", "corp.internal"]
_DOMAINS += ["foo.invalid", "x.onion", "1.2.3.4", "[1.2.3.4]", "xn--bcher-kva.example"]
_DOMAINS += ["XN--BCHER-KVA.Example", "bücher.example", "-a.com", "a-.com", "a..com", "com"]
_DOMAINS += ["a.123", "a_b.com", "b" * 63 + ".com", "b" * 64 + ".com", ("c" * 60 + ".") * 4]
_DOMAINS += [("c" * 50 + ".") * 4 + "com", "EXAMPLE.COM.", "ex ample.com", "home.arpa"]
_DOMAINS += ["xn--zz.com", "ab--c.com", "a@b.com", "e\u0301.com"]


def _same_verdict(address: str) -> None:
    whole, split = addresses._validate(address), addresses._syntax_error(address)
    assert (whole is None) == (split is None), (address, whole, split)
    # "special-use" in the reason makes `is_plausible_address` try the domain as ".com"
    assert ("special-use" in (whole or "")) == ("special-use" in (split or "")), address


def test_plausibility_is_email_validators_verdict() -> None:
    for local, domain in itertools.product(_LOCALS, _DOMAINS):
        _same_verdict(f"{local}@{domain}")
        _same_verdict(f"{local}@{domain}".upper())


@given(
    local=st.sampled_from(_LOCALS) | st.text('abXY09.-_+@!"<> (),é', max_size=12),
    domain=st.sampled_from(_DOMAINS) | st.text("abXY09.-_@ é", max_size=20),
)
@settings(max_examples=300, deadline=None)
def test_plausibility_is_email_validators_verdict_drawn(local: str, domain: str) -> None:
    _same_verdict(f"{local}@{domain}")


@given(
    st.from_regex(
        r"(?:[a-zA-Z0-9-]{1,5}\.){1,3}[a-zA-Z]{1,4}|[a-z]{1,3}\.(?:test|local|arpa)", fullmatch=True
    )
)
@settings(max_examples=300, deadline=None)
def test_plain_domains_are_read_as_email_validator_reads_them(domain: str) -> None:
    if addresses._plain_domain(domain):
        ok = email_validator.validate_email(
            f"a@{domain}", check_deliverability=False, test_environment=True
        )
        assert (ok.domain, ok.ascii_domain) == (domain.lower(), domain.lower())
    _same_verdict(f"jane@{domain}")
