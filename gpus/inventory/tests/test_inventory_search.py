"""The node list's name search (#17 item 2): by name (the default sort) on PostgreSQL a page is
a range of the name pieces' index (NodeNameGram) for the term's rarest piece, the same two
queries whatever the term and the fleet, and every page is the right one in every sort."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gpus.inventory.choices import NodeHealth
from gpus.inventory.filters import NodeFilter
from gpus.inventory.models import Cluster, Node, NodeNameGram
from gpus.inventory.selectors import name_matches, node_page
from gpus.web.paging import AFTER, BEFORE, LAST, PageRequest, decode_cursor

pytestmark = pytest.mark.django_db

A100S, L40SES = 11000, 2000
TRIGRAM_INDEX = "node_name_upper_trgm_idx"


@pytest.fixture
def fleet() -> list[str]:
    """A100 nodes first in name order, then L40S: ``l40s-001`` matches 100 nodes, all after
    11,000 A100s."""
    cluster = Cluster.objects.create(name="search")
    names = [f"gpu-a100-{i:05d}" for i in range(1, A100S + 1)]
    names += [f"gpu-l40s-{i:05d}" for i in range(1, L40SES + 1)]
    Node.objects.bulk_create(
        [Node(cluster=cluster, name=name, health=NodeHealth.READY, gpu_free=i % 9)
         for i, name in enumerate(names)],
        batch_size=5000,
    )  # fmt: skip
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # the planner sees the fleet as it is
            cursor.execute("ANALYZE inventory_node")
            cursor.execute("ANALYZE inventory_nodenamegram")
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


def search(term: str, sort: str = "name", page: PageRequest | None = None, nodes=None):
    """One page of the search and the SQL it sent."""
    with CaptureQueriesContext(connection) as queries:
        result = node_page(
            nodes if nodes is not None else Node.objects.all(),
            sort,
            page or PageRequest(),
            per_page=50,
            term=term,
        )
    return result, [q["sql"] for q in queries.captured_queries]


@pytest.mark.parametrize(
    "term, matches",
    [
        ("no-such-node", 0),
        ("gpu-l40s-01234", 1),
        ("L40S-001", 100),  # after 11,000 A100s in name order
        ("l40s-0", 2000),  # every L40S
        ("a100", 11000),
        ("gpu", 13000),  # every node
    ],
)
def test_the_queries_do_not_grow_with_the_matches(fleet, term, matches):
    """The same queries for a term matching no node or every node (the term's rarest name piece
    on PostgreSQL, the page, its GPUs); the pages are the right ones, forwards, backwards, last."""
    expected = [n for n in fleet if term.lower() in n]
    assert len(expected) == matches
    queries = 2 + (connection.vendor == "postgresql") - (not expected)  # no GPUs: no page
    first, sql = search(term)
    assert len(sql) == queries, sql
    assert [n.name for n in first.rows] == expected[:50]
    last, sql = search(term, page=PageRequest(LAST))
    assert len(sql) == queries
    assert [n.name for n in last.rows] == expected[-50:]
    if len(expected) > 100:
        second, sql = search(term, page=PageRequest(AFTER, decode_cursor(first.next_cursor)))
        assert len(sql) == queries and [n.name for n in second.rows] == expected[50:100]
        # The page before the second's last row: the 50 rows before it.
        back, _ = search(term, page=PageRequest(BEFORE, decode_cursor(second.next_cursor)))
        assert [n.name for n in back.rows] == expected[49:99]


def test_a_term_far_along_the_order_is_read_whole_and_right(fleet):
    expected = [n for n in fleet if "l40s-001" in n]
    assert every_page("l40s-001") == expected
    assert every_page("l40s-001", sort="-name") == expected[::-1]
    # Another sort: most free GPUs first, the same matches.
    by_free = every_page("l40s-001", sort="-free")
    assert sorted(by_free) == expected and len(by_free) == len(set(by_free))
    assert every_page("no-such-node") == []
    # Another filter with the term: the node must pass it too.
    Node.objects.filter(name="gpu-l40s-00012").update(health=NodeHealth.NOT_READY)
    ready = node_page(
        Node.objects.filter(health=NodeHealth.READY), "name", PageRequest(), 200, "l40s-001"
    )
    assert [n.name for n in ready.rows] == [n for n in expected if n != "gpu-l40s-00012"]


def test_the_name_pieces_follow_the_nodes(fleet):
    """The triggers of migration 0008 keep the pieces right whatever writes nodes: a renamed
    node is found by its new name only, a deleted one no more. (SQLite has no such table.)"""
    node = Node.objects.get(name="gpu-l40s-00012")
    Node.objects.filter(pk=node.pk).update(name="gpu-b200-00012")
    assert every_page("b200") == ["gpu-b200-00012"]
    assert "gpu-l40s-00012" not in every_page("l40s-0001")
    Node.objects.filter(pk=node.pk).delete()
    assert every_page("b200") == []
    if connection.vendor == "postgresql":
        pieces = set(NodeNameGram.objects.filter(node__name="gpu-l40s-00013").values_list("gram"))
        assert pieces == {("GPU",), ("PU-",), ("U-L",), ("-L4",), ("L40",), ("40S",), ("0S-",),
                          ("S-0",), ("-00",), ("000",), ("001",), ("013",)}  # fmt: skip
        assert not NodeNameGram.objects.filter(node_id=node.pk).exists()


# PostgreSQL's plans: the first CI pass (PostgreSQL) runs it, the embedded pass (SQLite) not.
@pytest.mark.once
@pytest.mark.django_db(transaction=True)
def test_postgresql_reads_a_page_of_the_name_pieces_index(fleet):
    """EXPLAIN ANALYZE of the very query the search sent, on the fleet vacuumed as autovacuum
    leaves it: an index-only range of the pieces' primary key that stops after a page of
    matches, their nodes by primary key, no sort and no scan of the node table, for terms
    matching 1 to 13,000 nodes (L40S ones all after 11,000 A100s)."""
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE inventory_node")
        cursor.execute("VACUUM ANALYZE inventory_nodenamegram")
    for term in ("l40s-0", "gpu-l40s-01234", "L40S-001", "gpu", "00-"):
        _check_plan(term)


def _check_plan(term: str) -> None:
    _, sql = search(term)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql[1])
        (plan,) = cursor.fetchone()[0]
    nodes = list(_walk(plan["Plan"]))
    page = [n for n in nodes if n.get("Index Name") == "inventory_nodenamegram_pkey"]
    assert len(page) == 1 and page[0]["Node Type"] == "Index Only Scan", plan
    # Read: the page (and the row telling there is a next one), and the nodes holding the rarest
    # piece but not the whole term before them: a few hundred at most of 156,000 rows.
    assert page[0]["Actual Rows"] <= 51, plan
    assert page[0]["Actual Rows"] + page[0].get("Rows Removed by Filter", 0) <= 400, (term, plan)
    assert not [n for n in nodes if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")], plan
    assert not [n for n in nodes if n["Node Type"] == "Sort" and "inventory" in str(n)], plan


def _walk(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _walk(child)


def test_the_count_matches_and_short_terms_are_refused_next_to_the_field(fleet):
    assert name_matches(Node.objects.all(), "L40S-001").count() == 100
    form = NodeFilter({"q": "a1"}, queryset=Node.objects.all())
    assert not form.is_valid() and "q" in form.errors
    assert form.name_term == ""
    assert NodeFilter({"q": "a10"}, queryset=Node.objects.all()).name_term == "a10"


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
    with CaptureQueriesContext(connection) as narrow_queries:
        narrow = admin_client_.get(reverse("gpus:nodes"), {"q": "l40s-001"}).content.decode()
    assert "100 nodes" in narrow and "More than" not in narrow
    # As many queries for 11,000 matches as for 100.
    assert len(narrow_queries.captured_queries) == len(queries.captured_queries)
