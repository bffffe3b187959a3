"""Reply/forward prefixes are removed from subjects, in many languages."""

from __future__ import annotations

import pytest

from crmdrop.mail.subjects import strip_subject_prefixes


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Quote", "Quote"),
        ("RE: FW: Fwd: Quote", "Quote"),
        ("AW: WG: Angebot", "Angebot"),
        ("TR: RE : Devis", "Devis"),
        ("RV: RE: Presupuesto", "Presupuesto"),
        ("R: I: Preventivo", "Preventivo"),
        ("RIF: Preventivo", "Preventivo"),
        ("SV: VS: Tilbud", "Tilbud"),
        ("Antw: Doorst: Offerte", "Offerte"),
        ("Odp: PD: Oferta", "Oferta"),
        ("Відп: Пропозиція", "Пропозиція"),
        ("Ответ: Предложение", "Предложение"),
        ("回复: 转发: 报价", "报价"),
        ("答复：报价", "报价"),
        ("返信: 転送: 見積もり", "見積もり"),
        ("رد: عرض", "عرض"),
        ("תגובה: הצעה", "הצעה"),
        ("Ynt: İlt: Teklif", "Teklif"),
        ("Re[2]: Quote", "Quote"),
        ("Fwd (3): Quote", "Quote"),
        ("[Fwd: Quote]", "Quote"),
    ],
)
def test_it_strips_repeated_and_mixed_prefixes(subject: str, expected: str) -> None:
    assert strip_subject_prefixes(subject) == expected


def test_it_leaves_external_tags_alone() -> None:
    assert strip_subject_prefixes("[EXTERNAL] Re: Quote") == "[EXTERNAL] Re: Quote"
    assert strip_subject_prefixes("Re: [EXTERNAL] Quote") == "[EXTERNAL] Quote"


def test_it_keeps_words_that_merely_start_like_a_prefix() -> None:
    assert strip_subject_prefixes("Reference numbers") == "Reference numbers"
    assert strip_subject_prefixes("Invoice: March") == "Invoice: March"
