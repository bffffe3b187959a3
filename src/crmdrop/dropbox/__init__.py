"""Pure dropbox policy: no I/O, no database, no settings (values are passed in).

- `address`: the dropbox address codec (SPEC §2) and token redaction for logs;
- `senders`: who may send to a dropbox and which mail is auto-generated (SPEC §3);
- `rules`: the address rules that tell contacts from everyone else (SPEC §4.2);
- `names`: names for new contacts and the free-mail domain table (SPEC §4.3);
- `decide`: one delivery's facts in, a `plan.FilingPlan` out (SPEC §4, §5).
"""
