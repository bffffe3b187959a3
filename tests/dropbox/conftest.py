from __future__ import annotations

import pytest

from crmdrop.dropbox.plan import UserInfo
from tests.dropbox.dropbox_fakes import FakeAccount, make_owner


@pytest.fixture
def account() -> FakeAccount:
    return FakeAccount()


@pytest.fixture
def owner() -> UserInfo:
    return make_owner()
