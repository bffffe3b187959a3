"""Verdicts from a trusted upstream MTA's Authentication-Results (SPEC §3.3, §7.2)."""

from __future__ import annotations

from crmdrop.dropbox.sender_auth import upstream_verdict

AUTHOR = "olivia@acme.com"


def verdict(*values: str) -> tuple[bool, str]:
    result = upstream_verdict({"authentication-results": list(values)}, "mx.acme.net", AUTHOR)
    return result.failed, result.detail


def test_a_dmarc_fail_for_the_authors_domain_counts_against_it() -> None:
    failed, detail = verdict("mx.acme.net; dmarc=fail (p=reject) header.from=acme.com")
    assert failed and "dmarc=fail" in detail


def test_a_dmarc_pass_does_not() -> None:
    assert verdict("mx.acme.net; dmarc=pass header.from=acme.com")[0] is False


def test_results_from_an_untrusted_server_are_ignored() -> None:
    failed, detail = verdict("evil.example; dmarc=fail header.from=acme.com")
    assert failed is False and "no Authentication-Results" in detail


def test_a_dmarc_result_for_another_domain_is_not_the_authors() -> None:
    assert verdict("mx.acme.net; dmarc=fail header.from=other.example")[0] is False


def test_without_dmarc_spf_and_dkim_must_both_fail() -> None:
    assert verdict("mx.acme.net; spf=fail smtp.mailfrom=acme.com; dkim=fail")[0] is True
    assert verdict("mx.acme.net; spf=fail smtp.mailfrom=acme.com; dkim=pass")[0] is False
    assert verdict("mx.acme.net; spf=fail smtp.mailfrom=acme.com; dkim=none")[0] is False


def test_a_temporary_dns_error_never_counts_against_a_message() -> None:
    assert verdict("mx.acme.net; dmarc=temperror header.from=acme.com")[0] is False
    assert verdict("mx.acme.net; spf=temperror; dkim=temperror")[0] is False


def test_a_malformed_header_is_ignored() -> None:
    assert verdict("this is ; not = a header ;;")[0] is False


def test_dmarc_none_leaves_the_decision_to_spf_and_dkim() -> None:
    assert verdict("mx.acme.net; dmarc=none header.from=acme.com; spf=fail; dkim=fail")[0]
    assert not verdict("mx.acme.net; dmarc=none header.from=acme.com; spf=fail; dkim=pass")[0]


def test_only_the_topmost_header_of_the_trusted_server_counts() -> None:
    real = "mx.acme.net; spf=fail smtp.mailfrom=acme.com; dkim=fail"
    forged = "mx.acme.net; spf=pass smtp.mailfrom=acme.com; dkim=pass"
    assert verdict(real, forged)[0] is True  # the sender's own lower header changes nothing


def test_an_unreadable_topmost_header_of_the_trusted_server_is_a_temperror() -> None:
    # The sender wrote the lower one; the trusted MTA's own (on top) does not parse.
    failed, detail = verdict(
        "mx.acme.net; dmarc=((unbalanced", "mx.acme.net; dmarc=fail header.from=acme.com"
    )
    assert failed is False
    assert detail.startswith("temperror") and "dmarc=fail" not in detail
