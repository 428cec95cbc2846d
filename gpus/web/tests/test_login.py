"""Logins are throttled per user and address (django-axes), and failures are logged."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from gpus.testing import PASSWORD

pytestmark = pytest.mark.django_db


def attempt(client: Client, username: str, password: str, address: str, language: str = "en"):
    return client.post(
        reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR=address,
        HTTP_ACCEPT_LANGUAGE=language,
    )


def test_wrong_passwords_lock_out_that_user_from_that_address(alice, bob, caplog):
    client = Client()
    caplog.set_level(logging.WARNING)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = attempt(client, "alice", "wrong", "10.0.0.1")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    locked = attempt(client, "alice", "wrong", "10.0.0.1", language="fr")
    assert locked.status_code == 429
    assert "Trop de connexions échouées" in locked.content.decode()

    # Even the right password is refused now, in the user's language.
    response = attempt(client, "alice", PASSWORD, "10.0.0.1", language="fr")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert "bloquées pendant 15 minutes" in response.content.decode()

    # The same user from another address, and another user from that address, still get in.
    assert attempt(Client(), "alice", PASSWORD, "10.0.0.2").status_code == 302
    assert attempt(Client(), "bob", PASSWORD, "10.0.0.1").status_code == 302

    failures = [r for r in caplog.records if "login failure" in r.getMessage().lower()]
    assert len(failures) >= settings.AXES_FAILURE_LIMIT
    assert all(r.levelno >= logging.WARNING for r in failures)


def test_a_success_resets_the_count(alice):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, "alice", "wrong", "10.0.0.3")
    assert attempt(client, "alice", PASSWORD, "10.0.0.3").status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt(client, "alice", "wrong", "10.0.0.3").status_code == 200
    assert attempt(client, "alice", PASSWORD, "10.0.0.3").status_code == 302


def test_programmatic_logins_still_work_for_tests_and_shells(alice):
    client = Client()
    assert client.login(username="alice", password=PASSWORD) is True
    assert Client().login(username="alice", password="wrong") is False
