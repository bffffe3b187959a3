"""Pure email parsing for crmdrop: bytes in, facts out (no accounts, storage or settings).

Public API (import from the modules):

- `crmdrop.mail.parse.parse_message(raw) -> ParsedMessage` — never raises.
- `crmdrop.mail.headers.read_header_summary(raw) -> HeaderSummary` — headers only, fast.
- `crmdrop.mail.addresses`: `normalize_address`, `is_plausible_address`,
  `extract_addresses_from_text`, `parse_address_list`.
- `crmdrop.mail.subjects.strip_subject_prefixes`.
- `crmdrop.mail.forwarded`: `find_forwarded_blocks`, `find_forwarded_blocks_html`,
  `split_own_text`.

Client and language knowledge is data in `crmdrop.mail.labels` (see
docs/forwarded-formats.md).
"""
