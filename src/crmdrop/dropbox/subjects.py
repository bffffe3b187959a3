"""Titles from subjects: `Re:`/`Fwd:` prefixes removed (SPEC §5.1, §5.3).

The prefix table (every common language) belongs to the parser, in
`crmdrop.mail.subjects`; this module only adds what a title needs on top.
"""

from __future__ import annotations

from crmdrop.mail.subjects import strip_subject_prefixes

__all__ = ["NO_SUBJECT", "strip_prefixes", "title_from_subject"]

NO_SUBJECT = "(no subject)"


def strip_prefixes(subject: str) -> str:
    """`subject` without reply/forward prefixes in any common language."""
    return strip_subject_prefixes(subject or "").strip()


def title_from_subject(subject: str | None) -> str:
    """A case/opportunity/task title: the subject without prefixes, or "(no subject)"."""
    return strip_prefixes(subject or "") or NO_SUBJECT
