"""Where the shared email corpora live, and every email file in them.

The lead's end-to-end corpus test and `tests/mail` both use `iter_corpus_emails()`.
The directory is ``../shared/corpora`` next to the repository, or ``$CRMDROP_CORPORA``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["corpora_dir", "is_email_file", "iter_corpus_emails"]

# Files that are documentation or expectations, not emails.
_NOT_EMAIL_NAMES = {
    "SOURCE.txt",
    "LICENSE",
    "LICENSE.txt",
    "COPYING.LESSER",
    "PSF-LICENSE",
    "MIT-LICENSE",
    "license.md",
    "README.md",
}
_NOT_EMAIL_SUFFIXES = {
    ".json",
    ".md",
    ".xml",
    ".py",
    ".rb",
    ".js",
    ".yml",
    ".yaml",
    ".toml",
    ".xsd",
}


def corpora_dir() -> Path:
    env = os.environ.get("CRMDROP_CORPORA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


def is_email_file(path: Path) -> bool:
    """True for files that hold an email or an email body (not licences, expectations)."""
    if not path.is_file() or path.name in _NOT_EMAIL_NAMES or path.name.startswith("."):
        return False
    if path.suffix.lower() in _NOT_EMAIL_SUFFIXES:
        return False
    return not any(part in ("LICENSES",) for part in path.parts)


def iter_corpus_emails(root: Path | None = None) -> Iterator[tuple[Path, bytes]]:
    """Yield (path, raw bytes) for every email file under the corpora, sorted by path."""
    base = root or corpora_dir()
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*")):
        if is_email_file(path):
            yield path, path.read_bytes()
