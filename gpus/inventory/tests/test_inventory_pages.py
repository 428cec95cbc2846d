"""Inventory pages at any fleet size: keyset pages, pinned query counts, many clusters,
per-cluster data age, tenancy (issue 11 items 1-2, issue 7 item 6)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import NodeHealth, ResourceState, WorkloadKind
from gpus.inventory.models import (
    Cluster,
    GpuWorkload,
    ModelInventory,
    Node,
    TenantAllocation,
)
from gpus.inventory.selectors import (
    NODE_SORT_KEYS,
    TENANTS_PER_PAGE,
    allocations_by_tenant,
    node_page,
)
from gpus.tenancy.models import Tenant
from gpus.web.paging import PageRequest, decode_cursor, encode_cursor

pytestmark = pytest.mark.django_db


@pytest.fixture
def l40s(db) -> GpuModel:
    return GpuModel.objects.get_or_create(
        resource_name="nvidia.com/AD102GL_L40S", defaults={"display_name": "L40S"}
    )[0]


@pytest.fixture
def h100(db) -> GpuModel:
    return GpuModel.objects.get_or_create(
        resource_name="nvidia.com/H100_94GB", defaults={"display_name": "H100"}
    )[0]


def synced(name: str, minutes_ago: float = 0, **extra) -> Cluster:
    return Cluster.objects.create(
        name=name, last_synced_at=timezone.now() - timedelta(minutes=minutes_ago), **extra
    )


@pytest.fixture
def two_clusters(l40s, h100, acme, globex, make_nodes):
    """Two clusters with the same node names, different models, and both tenants in each."""
    east, west = synced("east"), synced("west")
    make_nodes(east, 30, l40s)
    make_nodes(west, 20, h100)
    for cluster, model, installed, free in ((east, l40s, 240, 100), (west, h100, 160, 60)):
        ModelInventory.objects.create(
            cluster=cluster,
            gpu_model=model,
            installed=installed,
            allocated=installed - free,
            free=free,
        )
    for cluster, model in ((east, l40s), (west, h100)):
        for tenant, n in ((acme, 3), (globex, 5)):
            TenantAllocation.objects.create(
                cluster=cluster,
                namespace=tenant.namespace,
                tenant=tenant,
                gpu_model=model,
                allocated=n,
            )
            GpuWorkload.objects.create(
                cluster=cluster,
                tenant=tenant,
                kind=WorkloadKind.VM,
                app_kind="VMInstance",
                name=f"{tenant.namespace}-{cluster.name}-vm",
                gpu_model=model,
                gpus_per_instance=n,
                gpus_held=n,
                state=ResourceState.RUNNING,
            )
    return east, west


# --- keyset pagination ---------------------------------------------------------------


def walk(queryset, sort: str, per_page: int) -> tuple[list[int], list[int]]:
    """Every id, paging forward from the first page and backward from the last."""
    forward, page = [], node_page(queryset, sort, PageRequest(), per_page)
    while True:
        forward += [n.pk for n in page.rows]
        if not page.has_next:
            break
        page = node_page(
            queryset, sort, PageRequest("after", decode_cursor(page.next_cursor)), per_page
        )
    backward, page = [], node_page(queryset, sort, PageRequest("last"), per_page)
    while True:
        # Back at the start the pager shows a full first page, overlapping the one after it.
        backward = [n.pk for n in page.rows] + [
            pk for pk in backward if pk not in {n.pk for n in page.rows}
        ]
        if not page.has_previous:
            break
        page = node_page(
            queryset, sort, PageRequest("before", decode_cursor(page.previous_cursor)), per_page
        )
    assert len(page.rows) == min(per_page, queryset.count())
    return forward, backward


@pytest.mark.parametrize("sort", [s for key in NODE_SORT_KEYS for s in (key, f"-{key}")])
def test_keyset_pages_visit_every_node_once_in_order_for_every_sort(sort, l40s, make_nodes):
    make_nodes(synced("a"), 37, l40s)
    make_nodes(synced("b"), 26, l40s)  # the same names in another cluster: equal keys but id
    keys = NODE_SORT_KEYS[sort.lstrip("-")]
    order = [f"-{k}" for k in keys] if sort.startswith("-") else keys
    expected = list(Node.objects.order_by(*order).values_list("pk", flat=True))
    forward, backward = walk(Node.objects.all(), sort, per_page=10)
    assert forward == expected
    assert backward == expected


def test_keyset_pages_with_filters_match_the_filtered_order(l40s, make_nodes):
    make_nodes(synced("a"), 60, l40s)
    cordoned = Node.objects.filter(health=NodeHealth.CORDONED)
    expected = list(cordoned.order_by("-gpu_free", "-name", "-id").values_list("pk", flat=True))
    forward, backward = walk(cordoned, "-free", per_page=4)
    assert forward == backward == expected and len(expected) == 15


def test_previous_from_the_second_page_is_a_full_first_page(l40s, make_nodes):
    make_nodes(synced("a"), 25, l40s)
    nodes = Node.objects.all()
    first = node_page(nodes, "name", PageRequest(), 10)
    second = node_page(nodes, "name", PageRequest("after", decode_cursor(first.next_cursor)), 10)
    again = node_page(
        nodes, "name", PageRequest("before", decode_cursor(second.previous_cursor)), 10
    )
    assert [n.pk for n in again.rows] == [n.pk for n in first.rows]
    assert not again.has_previous and again.has_next


@pytest.mark.parametrize(
    "query",
    [
        {"after": "not-base64!"},
        {"after": encode_cursor(["x"])},  # wrong length
        {"after": encode_cursor([1, 2])},  # wrong types for (name, id)
        {"before": encode_cursor([True, "x"])},
        {"after": "A" * 5000},
        {"sort": "labels"},
        {"page": "-1"},
    ],
)
def test_bad_cursors_and_sorts_show_a_page_not_a_500(query, l40s, admin_client_, make_nodes):
    make_nodes(synced("a"), 5, l40s)
    response = admin_client_.get(reverse("gpus:nodes"), query)
    assert response.status_code == 200
    assert "gpu-00-0000" in response.content.decode()


def test_node_list_pages_through_links(l40s, admin_client_, make_nodes):
    make_nodes(synced("a"), 120, l40s)
    url = reverse("gpus:nodes")
    html = admin_client_.get(url, {"sort": "-free"}).content.decode()
    assert "120 nodes" in html and 'rel="next"' in html and 'rel="prev"' not in html
    next_href = re.search(r'href="\?([^"]*after=[^"]*)" ', html).group(1).replace("&amp;", "&")
    assert "sort=-free" in next_href
    second = admin_client_.get(f"{url}?{next_href}").content.decode()
    assert 'rel="prev"' in second and 'rel="next"' in second
    last = admin_client_.get(url, {"sort": "-free", "page": "last"}).content.decode()
    assert 'rel="next"' not in last and 'rel="first"' in last


def test_only_the_shown_columns_are_read(l40s, admin_client_, make_nodes):
    make_nodes(synced("a"), 3, l40s)
    with CaptureQueriesContext(connection) as ctx:
        admin_client_.get(reverse("gpus:nodes"))
    node_queries = [q["sql"] for q in ctx.captured_queries if 'FROM "inventory_node"' in q["sql"]]
    assert node_queries and all('"labels"' not in sql for sql in node_queries)
    assert all("OFFSET" not in q["sql"] for q in ctx.captured_queries)


def test_count_is_cached_per_snapshot_and_filter(l40s, admin_client_, make_nodes):
    cluster = synced("a")
    make_nodes(cluster, 12, l40s)
    url = reverse("gpus:nodes")
    assert "12 nodes" in admin_client_.get(url).content.decode()
    with CaptureQueriesContext(connection) as ctx:
        admin_client_.get(url)
    assert not any("COUNT(" in q["sql"] for q in ctx.captured_queries)
    assert "3 nodes" in admin_client_.get(url, {"health": "cordoned"}).content.decode()
    # A new sync (a later time) counts afresh.
    make_nodes(cluster, 4, l40s, prefix="new")
    Cluster.objects.filter(pk=cluster.pk).update(last_synced_at=timezone.now())
    assert "16 nodes" in admin_client_.get(url).content.decode()


# --- query counts, pinned, and the same at two fleet sizes ---------------------------


def page_queries(client, url: str, query: dict | None = None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, query or {})
    assert response.status_code == 200
    return len(ctx.captured_queries)


NODE_QUERIES = [
    {},
    {"page": "last"},
    {"health": "ready", "sort": "-free"},
    {"health": "ready", "sort": "-free", "page": "last"},
    {"gpu_model": "PK", "has_free": "yes", "sort": "allocated"},
    {"cluster": "east", "sort": "cluster"},
    {"q": "gpu-03", "sort": "-installed"},
    {"sort": "health"},
    {"sort": "-name", "page": "last"},
]


@pytest.mark.parametrize("query", NODE_QUERIES)
def test_node_list_query_count_is_pinned(
    query, two_clusters, l40s, admin_client_, django_assert_num_queries
):
    query = {k: str(l40s.pk) if v == "PK" else v for k, v in query.items()}
    # session, user, nav tenant, clusters, filter's model and cluster choices (+1 to validate
    # a chosen one), the page, its GPUs, the count (first time only: cached); a name search by
    # name on PostgreSQL reads the term's rarest name piece first (inventory.selectors.node_page).
    searched = "q" in query and query.get("sort", "name") in ("name", "-name")
    searched = searched and connection.vendor == "postgresql"
    expected = 9 + ("gpu_model" in query) + ("cluster" in query) + searched
    with django_assert_num_queries(expected):
        admin_client_.get(reverse("gpus:nodes"), query)
    with django_assert_num_queries(expected - 1):
        admin_client_.get(reverse("gpus:nodes"), query)


def test_page_query_counts_do_not_grow_with_the_fleet(
    l40s, acme, alice_client, admin_client_, make_nodes
):
    cluster = synced("a")
    ModelInventory.objects.create(cluster=cluster, gpu_model=l40s, installed=8, free=8)
    make_nodes(cluster, 3, l40s)
    TenantAllocation.objects.create(
        cluster=cluster, namespace=acme.namespace, tenant=acme, gpu_model=l40s, allocated=1
    )
    pages = [
        (admin_client_, reverse("gpus:inventory"), {}),
        (admin_client_, reverse("gpus:nodes"), {}),
        (admin_client_, reverse("gpus:nodes"), {"page": "last", "health": "ready"}),
        (alice_client, reverse("gpus:my_gpus", args=[acme.namespace]), {}),
        (alice_client, reverse("gpus:catalog"), {}),
    ]
    small = [page_queries(c, u, q) for c, u, q in pages]
    make_nodes(cluster, 400, l40s, prefix="more")
    for i in range(120):
        tenant = Tenant.objects.create(namespace=f"tenant-t{i:03d}", display_name=f"T{i}")
        TenantAllocation.objects.create(
            cluster=cluster, namespace=tenant.namespace, tenant=tenant, gpu_model=l40s, allocated=1
        )
    GpuWorkload.objects.bulk_create(
        GpuWorkload(
            cluster=cluster,
            tenant=acme,
            kind=WorkloadKind.VM,
            app_kind="VMInstance",
            name=f"vm-{i:03d}",
            gpu_model=l40s,
            gpus_per_instance=1,
        )
        for i in range(130)
    )
    Cluster.objects.filter(pk=cluster.pk).update(last_synced_at=timezone.now())
    large = [page_queries(c, u, q) for c, u, q in pages]
    assert large == small


def test_overview_and_my_gpus_query_counts_are_pinned(
    two_clusters, acme, alice_client, admin_client_, django_assert_num_queries
):
    # session, user, nav tenant, clusters, held by my tenants, totals, their models,
    # + admin: per-tenant page, its models, its tenants, the objects the sync skipped.
    with django_assert_num_queries(11):
        admin_client_.get(reverse("gpus:inventory"))
    with django_assert_num_queries(7):
        alice_client.get(reverse("gpus:inventory"))
    # session, user, nav tenant, tenant, clusters, tenant again (selector check), the page,
    # + the operations in flight and the membership that allows actions (provisioning).
    with django_assert_num_queries(9):
        alice_client.get(reverse("gpus:my_gpus", args=[acme.namespace]), {"cluster": "west"})
    # session, user, nav tenant, clusters, models, free per model.
    with django_assert_num_queries(6):
        alice_client.get(reverse("gpus:catalog"))


# --- many clusters: aggregate, narrow to one -----------------------------------------


def test_overview_aggregates_clusters_and_narrows_to_one(two_clusters, admin_client_):
    url = reverse("gpus:inventory")
    html = admin_client_.get(url).content.decode()
    assert 'id="cluster-picker"' in html and "All 2 clusters" in html
    assert 'data-model="nvidia.com/AD102GL_L40S"' in html
    assert 'data-model="nvidia.com/H100_94GB"' in html
    west = admin_client_.get(url, {"cluster": "west"}).content.decode()
    assert 'data-model="nvidia.com/H100_94GB"' in west
    assert 'data-model="nvidia.com/AD102GL_L40S"' not in west
    assert "Cluster west: data as of" in west and "Cluster east" not in west
    # The polling fragment keeps the narrowing.
    assert f"{reverse('gpus:inventory_summary')}?cluster=west" in west
    summary = admin_client_.get(reverse("gpus:inventory_summary"), {"cluster": "east"})
    assert 'data-model="nvidia.com/H100_94GB"' not in summary.content.decode()


def test_unknown_cluster_name_shows_all_clusters(two_clusters, admin_client_):
    response = admin_client_.get(reverse("gpus:inventory"), {"cluster": "nope<script>"})
    assert response.status_code == 200
    assert (
        "Cluster east" in response.content.decode() and "<script>" not in response.content.decode()
    )


def test_per_tenant_table_sums_clusters_and_narrows(two_clusters, admin_client_):
    html = admin_client_.get(reverse("gpus:inventory")).content.decode()
    table = html[html.index('id="tenant-table"') :]
    assert "tenant-acme" in table and "tenant-globex" in table
    west = admin_client_.get(reverse("gpus:inventory"), {"cluster": "west"}).content.decode()
    west_table = west[west.index('id="tenant-table"') :]
    assert "H100" in west_table and "L40S" not in west_table


def test_per_tenant_table_pages_by_keyset(l40s, h100, admin_client_):
    cluster = synced("a")
    for i in range(130):
        for model in (l40s, h100):
            TenantAllocation.objects.create(
                cluster=cluster, namespace=f"tenant-t{i:03d}", gpu_model=model, allocated=i + 1
            )
    rows, page = [], allocations_by_tenant(PageRequest(), per_page=50)
    while True:
        rows += [(r["namespace"], r["gpu_model"]) for r in page.rows]
        if not page.has_next:
            break
        page = allocations_by_tenant(
            PageRequest("after", decode_cursor(page.next_cursor)), per_page=50
        )
    assert rows == sorted(rows) and len(rows) == len(set(rows)) == 260
    html = admin_client_.get(reverse("gpus:inventory"), {"tenants_page": "last"}).content.decode()
    assert "tenant-t129" in html and "tenant-t000" not in html and 'rel="first"' in html


def test_node_list_narrows_to_a_cluster_by_name(two_clusters, admin_client_):
    html = admin_client_.get(reverse("gpus:nodes"), {"cluster": "west"}).content.decode()
    table = html[html.index('id="nodes"') :]
    assert "20 nodes" in html and "H100" in table and "L40S" not in table
    assert "Cluster west: data as of" in html and "Cluster east" not in html
    html = admin_client_.get(reverse("gpus:nodes")).content.decode()
    assert "50 nodes" in html and ">east</td>" in html and ">west</td>" in html


def test_catalog_free_now_sums_clusters_and_narrows(two_clusters, alice_client):
    url = reverse("gpus:catalog")
    html = alice_client.get(url).content.decode()
    assert "<strong>100</strong> free now" in html and "<strong>60</strong> free now" in html
    assert "Cluster east: data as of" in html  # the age of "free now"
    west = alice_client.get(url, {"cluster": "west"}).content.decode()
    assert "<strong>60</strong> free now" in west and "<strong>100</strong> free now" not in west


# --- tenancy -------------------------------------------------------------------------


def test_tenants_see_only_their_own_workloads_and_holdings(
    two_clusters, acme, globex, alice_client, bob_client
):
    html = alice_client.get(reverse("gpus:my_gpus", args=[acme.namespace])).content.decode()
    assert "tenant-acme-east-vm" in html and "tenant-acme-west-vm" in html
    assert "tenant-globex" not in html
    narrowed = alice_client.get(
        reverse("gpus:my_gpus", args=[acme.namespace]), {"cluster": "east"}
    ).content.decode()
    assert "tenant-acme-east-vm" in narrowed and "tenant-acme-west-vm" not in narrowed
    assert bob_client.get(reverse("gpus:my_gpus", args=[acme.namespace])).status_code == 404
    overview = alice_client.get(reverse("gpus:inventory")).content.decode()
    assert 'id="tenant-table"' not in overview and "tenant-globex" not in overview
    assert alice_client.get(reverse("gpus:nodes"), {"cluster": "east"}).status_code == 404
    # Held by you: acme's 3 L40S in east (not globex's 5).
    row = re.search(r'data-model="nvidia.com/AD102GL_L40S".*?</tr>', overview, re.S).group(0)
    assert re.search(r'<td class="num held"[^>]*>3</td>', row)


def test_my_gpus_pages_a_tenant_with_many_workloads(acme, l40s, alice_client):
    cluster = synced("a")
    GpuWorkload.objects.bulk_create(
        GpuWorkload(
            cluster=cluster,
            tenant=acme,
            kind=WorkloadKind.VM,
            app_kind="VMInstance",
            name=f"vm-{i:03d}",
            gpu_model=l40s,
            gpus_per_instance=1,
        )
        for i in range(75)
    )
    url = reverse("gpus:my_gpus", args=[acme.namespace])
    first = alice_client.get(url).content.decode()
    assert "vm-049" in first and "vm-050" not in first and 'rel="next"' in first
    last = alice_client.get(url, {"page": "last"}).content.decode()
    assert "vm-074" in last and "vm-024" not in last
    # The table polls its own address, so it keeps showing the page it is on.
    assert f'hx-get="{url}?page=last"' in last


# --- data age and unreachable notices (issue 7 item 6) -------------------------------


def test_stale_and_unreachable_clusters_are_flagged_one_by_one(l40s, admin_client_, alice_client):
    synced("fresh")
    synced("late", minutes_ago=30)
    synced("down", minutes_ago=5, unreachable_since=timezone.now(), last_error="connection refused")
    for client in (admin_client_, alice_client):
        html = client.get(reverse("gpus:inventory")).content.decode()
        assert 'data-notice="fresh"' in html
        assert re.search(r'data-notice="stale">Cluster late: data as of .*Older than', html, re.S)
        assert re.search(r'data-notice="unreachable">Cluster down is unreachable since', html)
    assert "connection refused" in admin_client_.get(reverse("gpus:inventory")).content.decode()
    assert "connection refused" not in alice_client.get(reverse("gpus:inventory")).content.decode()


def test_sync_error_in_plain_french_with_the_raw_detail_for_admins(
    l40s, admin_client_, alice_client
):
    raw = "Cluster down refused the connection."  # the gateway's English, kept as detail
    synced(
        "down",
        minutes_ago=5,
        unreachable_since=timezone.now(),
        last_error=raw,
        last_error_kind="unreachable",
    )
    synced(
        "shy",
        last_error="Cluster shy refused this action: nodes is forbidden",
        last_error_kind="forbidden",
    )
    french = escape("Le portail n'a pas pu joindre le cluster down.")
    html = admin_client_.get(reverse("gpus:inventory"), HTTP_ACCEPT_LANGUAGE="fr").content
    html = html.decode()
    assert french in html and raw in html
    # The raw detail one click away, inside a <details> of its own.
    details = re.search(r"<details class=\"error-detail\">(.*?)</details>", html, re.S).group(1)
    assert "Détails techniques" in details and raw in details
    assert escape("Le cluster shy a refusé au portail l'accès") in html
    # Tenants read the sentence, never the raw detail.
    html = alice_client.get(reverse("gpus:inventory"), HTTP_ACCEPT_LANGUAGE="fr").content
    assert french in html.decode() and raw not in html.decode()
    # The admin's cluster list says it in plain words too.
    html = admin_client_.get(
        reverse("admin:inventory_cluster_changelist"), HTTP_ACCEPT_LANGUAGE="fr"
    ).content.decode()
    assert french in html


# Not "page": that is pytest-playwright's fixture, and would make these browser tests.
@pytest.mark.parametrize(
    "page_name", ["gpus:catalog", "gpus:inventory", "gpus:nodes", "gpus:my_gpus"]
)
def test_every_live_page_says_how_old_its_figures_are(page_name, l40s, acme, admin_client_):
    synced("late", minutes_ago=30)
    ModelInventory.objects.create(
        cluster=Cluster.objects.get(), gpu_model=l40s, installed=1, free=1
    )
    args = [acme.namespace] if page_name == "gpus:my_gpus" else []
    html = admin_client_.get(reverse(page_name, args=args)).content.decode()
    assert "Cluster late: data as of" in html and "Older than 1\xa0minute" in html


def test_many_clusters_are_summarised(l40s, alice_client, settings):
    settings.INVENTORY_STALE_SECONDS = 120
    for i in range(6):
        synced(f"ok-{i}", minutes_ago=i * 0.1)
    synced("slow", minutes_ago=10)
    synced("gone-a", minutes_ago=1, unreachable_since=timezone.now())
    synced("gone-b", minutes_ago=1, unreachable_since=timezone.now())
    Cluster.objects.create(name="brand-new")
    html = alice_client.get(reverse("gpus:inventory")).content.decode()
    assert "Data from 10 clusters, the oldest as of" in html
    assert "2 clusters are unreachable: gone-a, gone-b." in html
    assert "1 cluster has not synced for over 2\xa0minutes: slow." in html
    assert "1 cluster has not been synced yet: brand-new." in html
    # Every cluster is still listed, one click away.
    details = html[html.index("<details") : html.index("</details>")]
    assert details.count("<li>") == 10
    # Narrowed to one, the page speaks of that one only.
    one = alice_client.get(reverse("gpus:inventory"), {"cluster": "slow"}).content.decode()
    notices = one.split('id="sync-status"')[1].split("</div>")[0]
    assert "Data from" not in notices and "Cluster slow: data as of" in notices
    assert "ok-1" not in notices


def _tenant_rows(html: str) -> list[str]:
    return re.findall(r'<code class="small nowrap">(tenant-[a-z0-9-]+)</code>', html)


def test_tenant_list_pages_by_keyset_at_a_fixed_query_count(
    acme, alice, l40s, admin_client_, django_assert_num_queries
):
    cluster = synced("a")
    TenantAllocation.objects.create(
        cluster=cluster, namespace=acme.namespace, tenant=acme, gpu_model=l40s, allocated=3
    )
    url = reverse("gpus:tenants")
    # session, user, nav tenants, the page with its counts (subqueries, not a GROUP BY).
    with django_assert_num_queries(4):
        html = admin_client_.get(url).content.decode()
    assert _tenant_rows(html) == ["tenant-acme"] and 'rel="next"' not in html
    Tenant.objects.bulk_create(
        Tenant(namespace=f"tenant-t{i:03d}", display_name=f"T{i}") for i in range(120)
    )
    with django_assert_num_queries(4):
        html = admin_client_.get(url).content.decode()
    first = _tenant_rows(html)
    assert len(first) == TENANTS_PER_PAGE and first[0] == "tenant-acme"
    # acme's counts: one member (alice), 3 GPUs held.
    acme_row = html[html.index("tenant-acme") : html.index("</tr>", html.index("tenant-acme"))]
    assert re.findall(r'class="num"[^>]*>(?:<a [^>]*>)?([0-9]+)', acme_row) == ["1", "0", "3"]
    seen = list(first)
    while 'rel="next"' in html:
        cursor = re.search(r'href="\?[^"]*after=([^"&]+)"', html).group(1)
        with django_assert_num_queries(4):
            html = admin_client_.get(url, {"after": cursor}).content.decode()
        seen += _tenant_rows(html)
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 121
    last = _tenant_rows(admin_client_.get(url, {"page": "last"}).content.decode())
    assert last == seen[-TENANTS_PER_PAGE:]
