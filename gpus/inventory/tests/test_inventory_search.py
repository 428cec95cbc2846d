"""The node list's name search (#17 item 2): a broad term fills its page from a bounded window
of the sort's index; a term whose matches lie far along the order is read through the trigram
index on PostgreSQL (EXPLAIN says so), and every page is the right one."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from gpus.inventory.choices import NodeHealth
from gpus.inventory.filters import NodeFilter
from gpus.inventory.models import Cluster, Node
from gpus.inventory.selectors import SEARCH_PLANS_OFF, SEARCH_WINDOW, name_matches, node_page
from gpus.web.paging import AFTER, LAST, PageRequest, decode_cursor

pytestmark = pytest.mark.django_db

A100S, L40SES = 11000, 2000
TRIGRAM_INDEX = "node_name_upper_trgm_idx"


@pytest.fixture
def fleet() -> list[str]:
    """A100 nodes first in name order, then L40S: ``l40s-001`` matches 100 nodes, all after
    11,000 A100s (far past the search window)."""
    cluster = Cluster.objects.create(name="search")
    names = [f"gpu-a100-{i:05d}" for i in range(1, A100S + 1)]
    names += [f"gpu-l40s-{i:05d}" for i in range(1, L40SES + 1)]
    Node.objects.bulk_create(
        [Node(cluster=cluster, name=name, health=NodeHealth.READY, gpu_free=i % 9)
         for i, name in enumerate(names)],
        batch_size=5000,
    )  # fmt: skip
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE inventory_node")  # the planner sees the fleet as it is
    return sorted(names)


def every_page(term: str, sort: str = "name") -> list[str]:
    nodes = Node.objects.all()
    seen: list[str] = []
    page = node_page(nodes, sort, PageRequest(), per_page=50, term=term)
    while True:
        seen += [n.name for n in page.rows]
        if not page.has_next:
            return seen
        values = decode_cursor(page.next_cursor)
        assert values is not None
        page = node_page(nodes, sort, PageRequest(AFTER, values), per_page=50, term=term)


def fallback_ran(queries: CaptureQueriesContext) -> bool:
    return any("set_config" in q["sql"] for q in queries.captured_queries)


def test_a_broad_term_fills_its_page_from_the_window(fleet):
    with CaptureQueriesContext(connection) as queries:
        page = node_page(Node.objects.all(), "name", PageRequest(), per_page=50, term="A100")
    assert [n.name for n in page.rows] == [n for n in fleet if "a100" in n][:50]
    assert page.has_next and not page.has_previous
    assert not fallback_ran(queries)  # 50 matches among the first nodes: no full search


def test_a_term_past_the_window_is_read_whole_and_right(fleet):
    expected = [n for n in fleet if "l40s-001" in n]
    assert len(expected) == 100
    with CaptureQueriesContext(connection) as queries:
        first = node_page(Node.objects.all(), "name", PageRequest(), per_page=50, term="L40S-001")
    assert [n.name for n in first.rows] == expected[:50]
    assert fallback_ran(queries) == (connection.vendor == "postgresql")
    assert every_page("l40s-001") == expected
    last = node_page(Node.objects.all(), "name", PageRequest(LAST), per_page=50, term="l40s-001")
    assert [n.name for n in last.rows] == expected[-50:]
    # Another sort: most free GPUs first, the same matches.
    by_free = every_page("l40s-001", sort="-free")
    assert sorted(by_free) == expected and len(by_free) == len(set(by_free))
    assert every_page("no-such-node") == []


def test_postgresql_reads_the_matches_through_the_trigram_index(fleet):
    """EXPLAIN of the very query the search sent, under the settings it ran with."""
    with CaptureQueriesContext(connection) as queries:
        node_page(Node.objects.all(), "name", PageRequest(), per_page=50, term="l40s-001")
    if connection.vendor != "postgresql":
        # SQLite has no trigram index: the search reads the table, and says nothing else.
        assert not fallback_ran(queries)
        return
    sql = [q["sql"] for q in queries.captured_queries]
    off = next(i for i, q in enumerate(sql) if "set_config" in q and "'off'" in q)
    search = next(q for q in sql[off:] if q.lstrip().upper().startswith("SELECT") and "LIKE" in q)
    with transaction.atomic(), connection.cursor() as cursor:
        for name in SEARCH_PLANS_OFF:
            cursor.execute("SELECT set_config(%s, 'off', true)", [name])
        cursor.execute(f"EXPLAIN {search}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        for name in SEARCH_PLANS_OFF:
            cursor.execute("SELECT set_config(%s, 'on', true)", [name])
    assert TRIGRAM_INDEX in plan, plan
    # The search put the settings back: the rest of the transaction plans as usual.
    with connection.cursor() as cursor:
        for name in SEARCH_PLANS_OFF:
            cursor.execute("SELECT current_setting(%s)", [name])
            assert cursor.fetchone()[0] == "on"


def test_the_count_matches_and_short_terms_are_refused_next_to_the_field(fleet):
    assert name_matches(Node.objects.all(), "L40S-001").count() == 100
    form = NodeFilter({"q": "a1"}, queryset=Node.objects.all())
    assert not form.is_valid() and "q" in form.errors
    assert form.name_term == ""
    assert NodeFilter({"q": "a10"}, queryset=Node.objects.all()).name_term == "a10"
    assert SEARCH_WINDOW < A100S


def test_the_page_says_a_short_term_is_too_short_next_to_the_field(admin_client_):
    from django.urls import reverse

    response = admin_client_.get(reverse("gpus:nodes"), {"q": "a1"})
    assert response.status_code == 200
    assert "Ensure this value has at least 3 characters (it has 2)." in response.content.decode()


def test_a_broad_term_counts_up_to_the_cap_and_says_more_than(fleet, admin_client_):
    """A broad term does not count every match: it stops past SEARCH_COUNT_CAP and says "more
    than"; a narrow one gets its exact count. The filter's choices are plain queries (no
    server-side cursor: DECLARE, FETCH, CLOSE for a handful of rows)."""
    from django.urls import reverse

    from gpus.inventory.selectors import SEARCH_COUNT_CAP

    assert SEARCH_COUNT_CAP < A100S
    with CaptureQueriesContext(connection) as queries:
        broad = admin_client_.get(reverse("gpus:nodes"), {"q": "a100"}).content.decode()
    assert f"More than {SEARCH_COUNT_CAP:,} nodes" in broad
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"]]
    assert len(counts) == 1 and f"LIMIT {SEARCH_COUNT_CAP + 1}" in counts[0], counts
    assert not [q for q in queries.captured_queries if q["sql"].startswith("DECLARE")]
    narrow = admin_client_.get(reverse("gpus:nodes"), {"q": "l40s-001"}).content.decode()
    assert "100 nodes" in narrow and "More than" not in narrow
