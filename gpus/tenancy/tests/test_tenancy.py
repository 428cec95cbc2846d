import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_alice_sees_her_tenant(alice_client):
    response = alice_client.get(reverse("gpus:tenant", args=["tenant-acme"]))
    assert response.status_code == 200
    assert "Acme Corp" in response.content.decode()


def test_alice_gets_404_for_globex(alice_client, globex, bob):
    response = alice_client.get(reverse("gpus:tenant", args=["tenant-globex"]))
    assert response.status_code == 404
    assert "bob" not in response.content.decode()


def test_a_tenant_that_does_not_exist_is_the_same_404(alice_client):
    assert alice_client.get(reverse("gpus:tenant", args=["tenant-nope"])).status_code == 404


def test_platform_admin_sees_every_tenant(admin_client_, globex):
    assert admin_client_.get(reverse("gpus:tenant", args=["tenant-globex"])).status_code == 200


def test_navigation_shows_admin_link_only_to_platform_admins(alice_client, admin_client_):
    alice_html = alice_client.get(reverse("gpus:catalog")).content.decode()
    admin_html = admin_client_.get(reverse("gpus:catalog")).content.decode()
    assert reverse("admin:index") not in alice_html
    assert reverse("admin:index") in admin_html
    assert reverse("gpus:tenant", args=["tenant-acme"]) in alice_html


def test_csrf_header_is_set_on_body_for_htmx(alice_client):
    html = alice_client.get(reverse("gpus:catalog")).content.decode()
    assert 'hx-headers=\'{"X-CSRFToken": "' in html


def test_writes_without_csrf_token_are_refused(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("logout"))
    assert response.status_code == 403
