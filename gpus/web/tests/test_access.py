"""The one access policy: who may see, who may act; everyone else gets a 404."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from gpus.web.access import (
    is_platform_admin,
    may_operate,
    require_may_operate,
    require_platform_admin,
)


def test_platform_admins_see_and_act_everywhere(platform_admin, acme, globex):
    assert is_platform_admin(platform_admin)
    require_platform_admin(platform_admin)
    assert may_operate(platform_admin, acme) and may_operate(platform_admin, globex)


def test_operators_act_in_their_tenant_only(alice, acme, globex):
    assert not is_platform_admin(alice)
    assert may_operate(alice, acme)
    assert not may_operate(alice, globex)
    with pytest.raises(Http404):
        require_may_operate(alice, globex)
    with pytest.raises(Http404):
        require_platform_admin(alice)


def test_viewers_and_strangers_only_look(carol, acme, db):
    assert not may_operate(carol, acme)
    with pytest.raises(Http404):
        require_may_operate(carol, acme)
    anonymous = AnonymousUser()
    assert not is_platform_admin(anonymous) and not may_operate(anonymous, acme)
