"""Pages as a new user and a prober meet them: navigation, detail pages, htmx history, bad
input, what tenants see, and the number of queries each page costs."""

from __future__ import annotations

import re

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory.models import Cluster, GpuWorkload, ModelInventory, Node

pytestmark = pytest.mark.django_db

L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"
HTMX = {"HTTP_HX_REQUEST": "true"}
HISTORY_RESTORE = {"HTTP_HX_REQUEST": "true", "HTTP_HX_HISTORY_RESTORE_REQUEST": "true"}


def html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# --- item 4: bad input is a form error, never a 500 ------------------------------------


@pytest.mark.parametrize("pk", ["9223372036854775808", "1" * 40, "-1", "٣"])
def test_compare_ids_that_cannot_be_ids_are_a_field_error(alice_client, pk):
    page = html(alice_client.get(reverse("gpus:compare"), {"models": [pk, "1"]}))
    assert "field-error" in page
    assert 'id="compare-table"' not in page


def test_node_search_longer_than_any_node_name_is_a_field_error(snapshot, admin_client_):
    page = html(admin_client_.get(reverse("gpus:nodes"), {"q": "x" * 60_000}))
    assert "Ensure this value has at most 253 characters (it has 60000)." in page


@pytest.mark.parametrize(
    "url", ["/admin/tenancy/tenant/", "/admin/auth/user/", "/admin/inventory/node/"]
)
def test_admin_search_of_50000_characters_is_refused_with_a_message(snapshot, admin_client_, url):
    page = html(admin_client_.get(url, {"q": "x" * 50_001}))
    assert "Search for at most 200 characters (you typed 50001)." in page


def test_ids_past_64_bits_in_urls_are_a_404(snapshot, admin_client_, alice_client):
    huge = "9" * 30
    assert admin_client_.get(f"/inventory/nodes/{huge}/").status_code == 404
    assert alice_client.get(f"/tenants/tenant-acme/gpus/{huge}/").status_code == 404


# --- item 9: htmx history restores get the full page; caches vary on HX-Request ---------


@pytest.mark.parametrize(
    ("client_name", "url"),
    [
        ("alice_client", "/compare/"),
        ("alice_client", "/advisor/?workload=llm"),
        ("alice_client", "/tenants/tenant-acme/gpus/"),
        ("admin_client_", "/inventory/nodes/?page=1"),
    ],
)
def test_history_restore_gets_the_whole_page_and_responses_vary_on_htmx(
    request, snapshot, client_name, url
):
    client = request.getfixturevalue(client_name)
    fragment = client.get(url, **HTMX)
    restored = client.get(url, **HISTORY_RESTORE)
    full = client.get(url)
    assert "<html" not in html(fragment)
    assert "<html" in html(restored)
    assert "<html" in html(full)
    for response in (fragment, restored, full):
        assert "HX-Request" in response.headers.get("Vary", "")


# --- item 10: what a tenant sees of the fleet ---------------------------------------------


def test_tenants_see_free_and_their_own_gpus_never_the_fleet_size(alice_client, acme):
    cluster = Cluster.objects.create(name="c", last_synced_at=timezone.now())
    h100 = GpuModel.objects.get(resource_name=H100)
    ModelInventory.objects.create(
        cluster=cluster, gpu_model=h100, installed=1237, allocated=311, free=909, unavailable=17
    )
    for url in (reverse("gpus:inventory"), reverse("gpus:inventory_summary")):
        page = html(alice_client.get(url))
        assert "909" in page
        for secret in ("1,237", "1237", "311", ">17<", "allocated,", 'class="bar"', "width:"):
            assert secret not in page, secret


def test_admins_see_the_fleet_bar(admin_client_, acme):
    cluster = Cluster.objects.create(name="c", last_synced_at=timezone.now())
    h100 = GpuModel.objects.get(resource_name=H100)
    ModelInventory.objects.create(
        cluster=cluster, gpu_model=h100, installed=1237, allocated=311, free=909, unavailable=17
    )
    page = html(admin_client_.get(reverse("gpus:inventory")))
    assert "311 allocated, 909 free, 17 unavailable" in page


# --- item 13: the catalog leads with the offer --------------------------------------------


def test_catalog_shows_the_offer_first_and_folds_the_rest(snapshot, alice_client):
    page = html(alice_client.get(reverse("gpus:catalog")))
    offered = GpuModel.objects.filter(offered=True).count()
    others = GpuModel.objects.filter(offered=False).count()
    assert page.count('class="card gpu-card"') == offered  # no card for models not in the fleet
    details = page[page.index('id="other-models"') :]
    assert f"{others} other models the platform knows, not in the fleet" in details
    assert page.index('id="offered-models"') < page.index('id="other-models"')
    # The L40S has free GPUs: it comes first; each card links to what one can do with it.
    cards = re.findall(r'<h3 id="gpu-\d+">([^<]+)</h3>', page)
    assert cards[0] == "NVIDIA L40S"
    l40s = GpuModel.objects.get(resource_name=L40S)
    assert f"/compare/?models={l40s.pk}&amp;models=" in page
    assert reverse("gpus:advisor") in page


def test_compare_form_offers_the_offered_models_first(alice_client):
    page = html(alice_client.get(reverse("gpus:compare")))
    primary = page[page.index('id="primary-models"') : page.index('class="more-models"')]
    assert primary.count('type="checkbox"') == GpuModel.objects.filter(offered=True).count()
    assert "More models" in page


# --- item 14: navigation, detail pages, admin, error pages --------------------------------


def test_admin_reaches_tenants_from_the_nav_and_the_per_tenant_rows(snapshot, admin_client_):
    catalog = html(admin_client_.get(reverse("gpus:catalog")))
    assert f'href="{reverse("gpus:tenants")}"' in catalog
    tenants = html(admin_client_.get(reverse("gpus:tenants")))
    assert reverse("gpus:tenant", args=["tenant-acme"]) in tenants
    assert reverse("gpus:tenant", args=["tenant-globex"]) in tenants
    inventory = html(admin_client_.get(reverse("gpus:inventory")))
    per_tenant = inventory[inventory.index('id="tenant-table"') :]
    assert f'href="{reverse("gpus:tenant", args=["tenant-globex"])}"' in per_tenant
    tenant = html(admin_client_.get(reverse("gpus:tenant", args=["tenant-globex"])))
    assert "NVIDIA H100" in tenant and ">2<" in tenant


def test_tenant_list_is_for_admins_only(alice_client):
    assert alice_client.get(reverse("gpus:tenants")).status_code == 404
    assert f'href="{reverse("gpus:tenants")}"' not in html(
        alice_client.get(reverse("gpus:catalog"))
    )


def test_node_detail_shows_gpus_holders_conditions_and_taints(snapshot, admin_client_):
    nodes = html(admin_client_.get(reverse("gpus:nodes")))
    node = Node.objects.get(name="gpu-l40s-worker-01")
    assert f'href="{reverse("gpus:node", args=[node.pk])}"' in nodes
    page = html(admin_client_.get(reverse("gpus:node", args=[node.pk])))
    gpus = page[page.index('id="node-gpus"') :]
    assert "NVIDIA L40S" in gpus
    holders = page[page.index('id="holders"') :]
    assert "virt-launcher-vm-instance-ws-abcde" in holders and "vm-instance-ws" in holders
    assert f'href="{reverse("gpus:tenant", args=["tenant-acme"])}"' in holders
    assert "MemoryPressure" in page and "KubeletReady" in page
    assert "nvidia.com/gpu=present:NoSchedule" in page
    other = Node.objects.get(name="gpu-h100-worker-01")
    h100_page = html(admin_client_.get(reverse("gpus:node", args=[other.pk])))
    assert "trainer-0" in h100_page and ">trainer<" in h100_page


def test_node_detail_says_as_of_when(snapshot, admin_client_):
    """The node rows lost their own sync time (the sync writes only what changed): the page said
    "as of ()". A node is as fresh as its cluster's last successful sync."""
    from django.utils import formats, timezone

    node = Node.objects.select_related("cluster").get(name="gpu-l40s-worker-01")
    assert node.cluster.last_synced_at is not None
    page = html(admin_client_.get(reverse("gpus:node", args=[node.pk]), HTTP_ACCEPT_LANGUAGE="en"))
    asof = formats.date_format(timezone.localtime(node.cluster.last_synced_at), "DATETIME_FORMAT")
    assert f"as of {asof} (" in page
    assert "()" not in page


def test_node_detail_is_a_404_for_tenants(snapshot, alice_client):
    node = Node.objects.get(name="gpu-l40s-worker-01")
    assert alice_client.get(reverse("gpus:node", args=[node.pk])).status_code == 404


def test_my_gpus_rows_open_a_workload_page(snapshot, alice_client, bob_client):
    ws = GpuWorkload.objects.get(name="ws")
    url = reverse("gpus:workload", args=["tenant-acme", ws.pk])
    mine = html(alice_client.get(reverse("gpus:my_gpus", args=["tenant-acme"])))
    assert f'href="{url}"' in mine
    page = html(alice_client.get(url))
    assert "The virtual machine is starting: its pod is not ready yet." in page
    assert (
        "virt-launcher pod is not ready" in page
    )  # the raw words, under "What the cluster reports"
    assert "Acme Corp" in page
    # Another tenant's workload: 404 under either namespace.
    assert bob_client.get(url).status_code == 404
    assert (
        bob_client.get(reverse("gpus:workload", args=["tenant-globex", ws.pk])).status_code == 404
    )


def test_an_admin_sees_tenant_gpus_not_my_gpus(snapshot, admin_client_, alice_client):
    """A platform admin is no member of tenant-acme: its workloads are not "My GPUs"."""
    ws = GpuWorkload.objects.get(name="ws")
    for url in (
        reverse("gpus:my_gpus", args=["tenant-acme"]),
        reverse("gpus:workload", args=["tenant-acme", ws.pk]),
    ):
        ops = html(admin_client_.get(url, HTTP_ACCEPT_LANGUAGE="en"))
        assert "Tenant GPUs" in ops and "My GPUs" not in ops
        mine = html(alice_client.get(url, HTTP_ACCEPT_LANGUAGE="en"))
        assert "My GPUs" in mine and "Tenant GPUs" not in mine


def test_django_admin_is_branded_and_shows_the_snapshot_read_only(snapshot, admin_client_):
    index = html(admin_client_.get(reverse("admin:index")))
    assert "Hikube Portal administration" in index
    assert "Django administration" not in index
    for name in ("cluster", "node", "gpuworkload", "modelinventory", "tenantallocation"):
        changelist = html(admin_client_.get(reverse(f"admin:inventory_{name}_changelist")))
        assert "Hikube Portal administration" in changelist
        assert admin_client_.get(reverse(f"admin:inventory_{name}_add")).status_code == 403
    node = Node.objects.get(name="gpu-l40s-worker-01")
    change = html(admin_client_.get(reverse("admin:inventory_node_change", args=[node.pk])))
    assert 'type="submit" value="Save"' not in change


def test_404_page_is_the_portals(alice_client):
    response = alice_client.get("/no/such/page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page and reverse("gpus:catalog") in page
    assert "<nav" in page  # the portal's frame, with its navigation


def test_500_page_is_the_portals_and_needs_no_context():
    from django.views.defaults import server_error

    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page and "portal.css" in page


def test_favicon_and_health_need_no_login(db):
    anonymous = Client()
    favicon = anonymous.get("/favicon.ico")
    assert favicon.status_code == 301 and favicon["Location"].endswith("favicon.svg")
    health = anonymous.get(reverse("healthz"))
    assert health.status_code == 200 and health.content == b"ok\n"
    login = html(anonymous.get(reverse("login")))
    assert 'rel="icon"' in login


# --- item 17: what each page costs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("client_name", "url", "queries"),
    [
        ("alice_client", "/", 6),
        ("alice_client", "/compare/", 5),
        ("alice_client", "/advisor/?workload=llm", 5),  # + the served instance types
        ("alice_client", "/tenants/tenant-acme/", 9),
        # My GPUs also shows the operations in flight and, for operators, the actions (+2).
        ("alice_client", "/tenants/tenant-acme/gpus/", 9),
        # A workload's page also lists its operations and, for operators, its actions (+2).
        ("alice_client", "WORKLOAD", 8),
        ("admin_client_", "/tenants/", 4),
        ("admin_client_", "NODE", 6),
    ],
)
def test_queries_per_page(request, snapshot, django_assert_num_queries, client_name, url, queries):
    client = request.getfixturevalue(client_name)
    if url == "WORKLOAD":
        url = reverse("gpus:workload", args=["tenant-acme", GpuWorkload.objects.get(name="ws").pk])
    elif url == "NODE":
        url = reverse("gpus:node", args=[Node.objects.get(name="gpu-l40s-worker-01").pk])
    client.get(url)  # warm the session and the content types
    with django_assert_num_queries(queries):
        assert client.get(url).status_code == 200


def test_login_page_costs_no_query(db, django_assert_num_queries):
    client = Client()
    with django_assert_num_queries(0):
        assert client.get(reverse("login")).status_code == 200


def test_node_conditions_come_from_the_nodes_status():
    from gpus.kube.records import node_from_json

    node = node_from_json(
        {
            "metadata": {"name": "n1"},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "KubeletNotReady",
                        "message": "PLEG",
                    },
                    {"type": "DiskPressure", "status": "True"},
                ]
            },
        }
    )
    assert node.ready is False
    assert node.conditions == (
        {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "PLEG"},
        {"type": "DiskPressure", "status": "True", "reason": "", "message": ""},
    )
