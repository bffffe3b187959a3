"""The deterministic sweep: every client layout × every language of the label table.

Each (client, language) cell is rendered plain and with two of the variations (rotated
so that every variation meets every client and every language), with the author,
recipients, date and labels rotated too.
"""

from __future__ import annotations

from datetime import datetime

from matrix.render import CC, CLIENTS, LANGUAGES, PEOPLE, RECIPIENTS, VARIATIONS, Case


def sweep_cases() -> list[Case]:
    cases = []
    n = len(VARIATIONS)
    for i, client in enumerate(CLIENTS):
        for j, language in enumerate(LANGUAGES):
            base = Case(
                client,
                language,
                author=PEOPLE[(i + j) % len(PEOPLE)],
                to=RECIPIENTS[: 1 + (i + j) % len(RECIPIENTS)],
                cc=CC[: (i + 2 * j) % (len(CC) + 1)],
                when=datetime(
                    2019 + j % 7,
                    1 + (i + j) % 12,
                    1 + (3 * i + j) % 28,
                    (5 * j) % 24,
                    (7 * i + j) % 60,
                ),
                pick=i + j,
            )
            for variation in ("plain", VARIATIONS[(i + j) % n]):
                cases.append(Case(**{**base.__dict__, "variation": variation}))
    return cases
