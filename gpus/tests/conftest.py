"""Personas: the people who use the portal, as fixtures."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.test import Client

from gpus.choices import MembershipRole
from gpus.models import Membership, Tenant

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Cached counts are keyed by snapshot time; tests reuse times and ids, so start empty."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def acme(db) -> Tenant:
    return Tenant.objects.create(namespace="tenant-acme", display_name="Acme Corp")


@pytest.fixture
def globex(db) -> Tenant:
    return Tenant.objects.create(namespace="tenant-globex", display_name="Globex")


def _user(username: str, **extra):
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)


@pytest.fixture
def alice(acme):
    """Operator in tenant-acme."""
    user = _user("alice")
    Membership.objects.create(user=user, tenant=acme, role=MembershipRole.OPERATOR)
    return user


@pytest.fixture
def bob(globex):
    """Operator in tenant-globex."""
    user = _user("bob")
    Membership.objects.create(user=user, tenant=globex, role=MembershipRole.OPERATOR)
    return user


@pytest.fixture
def carol(acme):
    """Viewer in tenant-acme."""
    user = _user("carol")
    Membership.objects.create(user=user, tenant=acme, role=MembershipRole.VIEWER)
    return user


@pytest.fixture
def platform_admin(db):
    return _user("admin", is_staff=True, is_superuser=True)


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def admin_client_(platform_admin) -> Client:
    client = Client()
    client.force_login(platform_admin)
    return client


@pytest.fixture
def seeded_catalog(transactional_db):
    """The GPU catalog the data migration seeds. Transactional tests (browser, real worker) flush
    the database after each test, so they seed it again rather than rely on the migration."""
    seed = importlib.import_module("gpus.migrations.0002_seed_catalog").seed
    seed(django_apps, None)
