"""Every page over HTTP through gunicorn, at 1,000, 100,000 and 1,000,000 GPUs (issue 17 items 1
and 7): p50 and p95 of REQUESTS requests per page (after WARMUP untimed ones, not a best-of),
the bytes on the wire as a browser asks (``Accept-Encoding: gzip, deflate, br``), the SQL
queries of one request (the same page in-process, Django's test client on the same database),
and the resident memory of a gunicorn web worker once it has served RSS_REQUESTS requests.

How each size's database is built (a PostgreSQL schema per size, kept until the end):
- 1,000 GPUs: devcluster's ``scale:125`` fleet (125 nodes), synced by the portal's own sync;
  100,000 GPUs: devcluster's ``scale`` fleet (12,500 nodes), synced the same way. Both carry the
  demo fleet's workloads in its proportions (devcluster/fleet.py: per 11 nodes two tenants with
  four GPU VMs and four Kubernetes clusters, 12 of 88 GPUs held), so the inventory, My GPUs,
  the tenants and the allocations are what a sync of such a fleet writes.
- 1,000,000 GPUs: that synced 100,000-GPU cluster's rows copied under nine more cluster records
  (bench_inventory.copy_cluster): ten clusters, 125,000 nodes, 90,880 workloads.
- The bench tenant takes over ten other tenants' workloads in the first cluster (busy_tenant),
  so its pages are full (50 rows) at every size and compare like with like.
- Then, from the synced workloads, what the background tasks would have written, in SQL:
  utilization in query-API mode (the mode past 10,000 GPUs, used at every size here so the
  sizes compare alike): a device per GPU of a Kubernetes worker (VM GPUs have no telemetry),
  a quarter of them idle for two hours; group rollups (fleet, cluster, model, tenant) for the
  last 24 hours and per node, host node and workload for the last 2 hours; per-GPU incident
  rows (a throttle on 1 GPU in 100, an XID on 1 in 1,000) for the last hour; one create
  operation and its audit event per workload; capacity rollups (hourly and daily, 30 days) and
  tenants' daily usage for 30 days.

Each size is served by its own gunicorn (the web container's config file, 2 workers,
production settings, its schema, its own Redis cache database), all three running at once;
the loop takes the pages in turn and each page at every size in turn, so a slow minute of this
shared 2-core machine falls on every page and size alike. The load average (1 minute) seen
around each page's requests is kept with its figure.

    DATABASE_URL=postgres://... .venv/bin/python bench/bench_pages.py [--sizes 1000,100000,1000000]

Writes bench/results/pages.md and the ``*.page.*`` figures of bench/results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import bench_inventory as inv  # noqa: E402
from bench.django_env import setup_production_django  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
REQUESTS = 30
WARMUP = 3
RSS_REQUESTS = 1000  # per worker
WORKERS = 1  # per size: a sequential client uses one at a time; its memory is exact
P95_TARGET_MS = 100.0
RATIO_TARGET = 1.5
# Bytes on the wire: one budget for every page and size (the 30-day chart's, issue 17 item 6).
# Not a ratio to the 1,000-GPU page: there a tenant holds a tenth of what it holds in the ten
# clusters of 1,000,000, so its lists are legitimately shorter (pages bound them, not the fleet).
WIRE_TARGET_KB = 100.0
FLEETS = {1000: "scale:125", 100_000: "scale"}
COPIES = 9
KEPT = Path(tempfile.gettempdir()) / "bench-pages-kept.json"  # what --keep built
ACCEPT_ENCODING = "gzip, deflate, br"  # what a browser sends (zstd aside)
TENANT = "tenant-s00000a"  # the tenant user's: present at every size, like every block's
DONORS = 10  # tenants whose workloads TENANT takes over (busy_tenant)
EXACT = "gpu-l40s-00042"  # a node every size has (the 125-node fleet has 62 L40S nodes)
BROAD = "l40s-0"  # every L40S node's name holds it


# --- the database of one size ---------------------------------------------------------------


Expr = str | tuple[str, list[Any]]  # SQL, or SQL with its parameters


def insert_select(model: Any, exprs: dict[str, Expr], source: str, params: list[Any]) -> int:
    """INSERT INTO model's table SELECT exprs FROM source: the columns not given take the
    model's default (Django's defaults are not the database's), nullable ones NULL."""
    from django.db import connection
    from django.db.models import NOT_PROVIDED

    cols, values, args = [], [], []
    given = dict(exprs)
    for f in model._meta.concrete_fields:
        if f.primary_key and f.column not in given:
            continue
        cols.append(f'"{f.column}"')
        if f.column in given:
            expr = given.pop(f.column)
            sql, extra = (expr, []) if isinstance(expr, str) else expr
            values.append(sql)
            args += extra
        elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            values.append("now()")
        elif f.default is not NOT_PROVIDED:
            default = f.default() if callable(f.default) else f.default
            values.append("%s")
            args.append(json.dumps(default) if f.get_internal_type() == "JSONField" else default)
        elif f.null:
            values.append("NULL")
        elif f.get_internal_type() in ("CharField", "TextField", "SlugField"):
            values.append("''")
        else:
            raise ValueError(f"{model.__name__}.{f.name}: no value and no default")
    assert not given, given
    # Table, column and expression text come from this file and the models, not from input.
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(cols)}) SELECT {', '.join(values)} "
    with connection.cursor() as cursor:
        cursor.execute(sql + source, args + params)
        return cursor.rowcount


def busy_tenant() -> dict[str, int]:
    """TENANT made one of the fleet's busiest: it takes over the workloads of the next DONORS
    tenants in the first cluster (renamed apart), before telemetry and operations are written
    from the workloads. Its My GPUs, operations and utilization then show a full page (50
    rows) at every size; with the demo's 6 workloads a tenant, the 1,000-GPU pages held 6 rows
    and the 1,000,000-GPU ones 60 (the tenant is in all ten clusters), so their ratio compared
    page lengths, not fleet sizes."""
    from django.db import connection

    from gpus.inventory.models import Cluster
    from gpus.tenancy.models import Tenant

    tenant = Tenant.objects.get(namespace=TENANT)
    first = Cluster.objects.order_by("pk").first()
    donors = list(
        Tenant.objects.filter(workloads__cluster=first)
        .exclude(pk=tenant.pk)
        .distinct()
        .order_by("namespace")
        .values_list("pk", flat=True)[:DONORS]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE inventory_gpuworkload w SET tenant_id = %s, name = w.name || '-' || t.namespace"
            " FROM tenancy_tenant t WHERE t.id = w.tenant_id AND w.cluster_id = %s"
            " AND w.tenant_id = ANY(%s)",
            [tenant.pk, first.pk, donors],
        )
        return {"busy_tenant_workloads_taken": cursor.rowcount}


def add_telemetry(now: dt.datetime) -> dict[str, int]:
    """Query-API mode's rows, from the synced workloads (see the module docstring)."""
    from django.db import connection

    from devcluster.fleet import MODELS
    from gpus.inventory.models import Cluster
    from gpus.utilization.models import (
        GpuDevice,
        GpuRollup,
        GroupRollup,
        MetricSource,
        SourceKind,
        XidEvent,
    )

    end = int(now.timestamp()) // 300 * 300
    dcgm_names = ", ".join(["(%s, %s)"] * len(MODELS))
    dcgm_params = [x for m in MODELS.values() for x in (m.resource, m.model_name)]
    for cluster in Cluster.objects.all():
        MetricSource.objects.update_or_create(
            cluster=cluster,
            defaults={"kind": SourceKind.PROMETHEUS, "url": "http://vm.invalid/select/0/prometheus",
                      "last_collected_at": now, "last_seconds": 12.0},
        )  # fmt: skip
    # A device per GPU of a Kubernetes worker: worker i of the group holds gpus_per_instance.
    insert_select(
        GpuDevice,
        {
            "uuid": "'GPU-' || w.id || '-' || g",
            "cluster_id": "w.cluster_id",
            "model_name": "coalesce(dcgm.model_name, '')",
            "gpu_model_id": "w.gpu_model_id",
            # A worker VM's name: unique per cluster, tenant and group, as CAPK names them.
            "hostname": "'kubernetes-' || w.name || '-' || w.node_group || '-' || "
            "substr(md5(w.cluster_id || t.namespace), 1, 5) || '-w' || ((g - 1) / "
            "greatest(w.gpus_per_instance, 1))",
            "index": "mod(g - 1, greatest(w.gpus_per_instance, 1))",
            "source": "'dcgm-exporter'",
            "tenant_id": "w.tenant_id",
            "workload_id": "w.id",
            "kube_cluster": "w.name",
            "first_seen_at": "now()",
            "last_seen_at": ("%s", [now]),
            "idle_since": (
                "CASE WHEN mod(w.id + g, 4) = 0 THEN %s::timestamptz END",
                [now - dt.timedelta(hours=2)],
            ),
            "busy_metric": "'DCGM_FI_DEV_GPU_UTIL'",
        },
        "FROM inventory_gpuworkload w JOIN tenancy_tenant t ON t.id = w.tenant_id "
        "LEFT JOIN catalog_gpumodel m ON m.id = w.gpu_model_id "
        f"LEFT JOIN (VALUES {dcgm_names}) AS dcgm(resource, model_name) "
        "ON dcgm.resource = m.resource_name, "
        "generate_series(1, w.gpus_held) g WHERE w.kind = 'node_group' AND w.gpus_held > 0",
        dcgm_params,
    )
    util = "(30 + 60 * abs(sin(hashtext(k.key) + b.epoch / 3000.0)))"
    buckets_24h = "generate_series(%s, %s, 300) AS b(epoch)"
    # (scope, key, gpus) of every group, from the devices: the rows a rollup pass writes.
    groups = {
        "fleet": "SELECT '' AS key, count(*) AS gpus FROM utilization_gpudevice",
        "cluster": "SELECT c.name, count(*) FROM utilization_gpudevice d "
        "JOIN inventory_cluster c ON c.id = d.cluster_id GROUP BY c.name",
        "model": "SELECT model_name, count(*) FROM utilization_gpudevice GROUP BY model_name",
        "tenant": "SELECT t.namespace, count(*) FROM utilization_gpudevice d "
        "JOIN tenancy_tenant t ON t.id = d.tenant_id GROUP BY t.namespace",
        "node": "SELECT hostname, count(*) FROM utilization_gpudevice GROUP BY hostname",
        "workload": "SELECT t.namespace || '|' || w.name || '/' || w.node_group, count(*) "
        "FROM utilization_gpudevice d JOIN inventory_gpuworkload w ON w.id = d.workload_id "
        "JOIN tenancy_tenant t ON t.id = d.tenant_id GROUP BY 1",
        # Host nodes: the synced nodes holding GPUs (keyed by name, as the rollup does).
        "host": "SELECT name, sum(gpu_allocated) FROM inventory_node WHERE gpu_allocated > 0 "
        "GROUP BY name",
    }
    counts = {}
    for scope, select in groups.items():
        hours = 24 if scope in ("fleet", "cluster", "model", "tenant") else 2
        counts[f"grouprollup_{scope}"] = insert_select(
            GroupRollup,
            {
                "bucket": "'5m'",
                "scope": f"'{scope}'",
                "key": "k.key",
                "ts": "to_timestamp(b.epoch)",
                "epoch": "b.epoch",
                "gpus": "k.gpus",
                "allocated": "k.gpus",
                "busy": f"round(k.gpus * {util} / 100)",
                "util_avg": util,
                "util_p95": f"least(100, {util} + 20)",
                "util_p05": f"greatest(0, {util} - 25)",
                "power_sum": f"k.gpus * (60 + 2.4 * {util})",
                "power_limit_sum": "k.gpus * 350",
                "energy_wh": f"k.gpus * (60 + 2.4 * {util}) / 12",
                "gpu_hours": "k.gpus / 12.0",
            },
            f"FROM ({select}) AS k(key, gpus), {buckets_24h}",
            [end - hours * 3600 + 300, end - 300],
        )
    counts["gpurollup"] = insert_select(
        GpuRollup,
        {
            "bucket": "'5m'",
            "ts": "to_timestamp(b.epoch)",
            "device_id": "d.id",
            "tenant_id": "d.tenant_id",
            "workload_id": "d.workload_id",
            "samples": "5",
            "allocated": "true",
            "throttle_any": "4",  # sw power cap
            "xid_last": "CASE WHEN mod(d.id, 1000) = 0 THEN 79 END",
        },
        f"FROM utilization_gpudevice d, {buckets_24h} WHERE mod(d.id, 100) = 0",
        [end - 3600 + 300, end - 300],
    )
    counts["xidevent"] = insert_select(
        XidEvent,
        {
            "device_id": "d.id",
            "ts": ("%s", [now - dt.timedelta(minutes=40)]),
            "xid": "79",
            "tenant_id": "d.tenant_id",
            "workload_id": "d.workload_id",
        },
        "FROM utilization_gpudevice d WHERE mod(d.id, 1000) = 0",
        [],
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM utilization_gpudevice")
        counts["gpudevice"] = cursor.fetchone()[0]
    return counts


def add_operations() -> dict[str, int]:
    """One create operation (done) and its audit event per workload, in discovery order."""
    from gpus.provisioning.models import AuditEvent, Operation

    ops = insert_select(
        Operation,
        {
            "cluster_id": "w.cluster_id",
            "tenant_id": "w.tenant_id",
            "actor_name": "'bench-alice'",
            "kind": "'create'",
            "namespace": "t.namespace",
            "app_kind": "w.app_kind",
            "name": "w.name",
            "node_group": "w.node_group",
            "gpu_model_id": "w.gpu_model_id",
            "gpu_count": "w.gpus_held",
            "state": "'succeeded'",
            "created_at": "now() - mod(w.id, 720) * interval '1 hour'",
            "finished_at": "now() - mod(w.id, 720) * interval '1 hour' + interval '40 seconds'",
        },
        "FROM inventory_gpuworkload w JOIN tenancy_tenant t ON t.id = w.tenant_id ORDER BY w.id",
        [],
    )
    events = insert_select(
        AuditEvent,
        {
            "operation_id": "o.id",
            "tenant_id": "o.tenant_id",
            "actor_name": "o.actor_name",
            "action": "'create'",
            "target": "o.app_kind || ' ' || o.namespace || '/' || o.name",
            "created_at": "o.created_at",
        },
        "FROM provisioning_operation o ORDER BY o.id",
        [],
    )
    return {"operation": ops, "auditevent": events}


def add_capacity(now: dt.datetime) -> dict[str, int]:
    """30 days of capacity rollups (hourly and daily per cluster and model) and of the
    tenants' daily usage (per cluster, tenant and model they hold)."""
    from gpus.capacity.models import CapacityRollup, TenantUsage

    hour = int(now.timestamp()) // 3600 * 3600
    day = int(now.timestamp()) // 86400 * 86400
    out = {}
    for bucket, step, last in (("1h", 3600, hour - 3600), ("1d", 86400, day - 86400)):
        out[f"capacityrollup_{bucket}"] = insert_select(
            CapacityRollup,
            {
                "bucket": f"'{bucket}'",
                "ts": "to_timestamp(b.epoch)",
                "cluster_id": "m.cluster_id",
                "gpu_model_id": "m.gpu_model_id",
                "samples": "12",
                "installed": "m.installed",
                "allocated": "m.allocated * (0.8 + 0.2 * abs(sin(b.epoch / 90000.0)))",
                "allocated_max": "m.allocated",
                "free": "m.installed - m.allocated",
                "free_min": "m.free",
                "unavailable": "m.unavailable",
            },
            f"FROM inventory_modelinventory m, generate_series(%s, %s, {step}) AS b(epoch)",
            [last - 30 * 86400 + step, last],
        )
    out["tenantusage_1d"] = insert_select(
        TenantUsage,
        {
            "bucket": "'1d'",
            "ts": "to_timestamp(b.epoch)",
            "cluster_id": "a.cluster_id",
            "tenant_id": "a.tenant_id",
            "gpu_model_id": "a.gpu_model_id",
            "gpus_max": "a.allocated",
            "gpu_hours": "a.allocated * 24",
        },
        "FROM inventory_tenantallocation a, generate_series(%s, %s, 86400) AS b(epoch) "
        "WHERE a.tenant_id IS NOT NULL",
        [day - 30 * 86400, day - 86400],
    )
    return out


def build(gpus: int, dc: Any, var_dir: Path) -> dict[str, Any]:
    """This size's schema: the synced fleet (and copies), then the tasks' rows."""
    from django.db import connection

    from gpus.inventory.models import Cluster, GpuWorkload, Node

    started = time.perf_counter()
    inv.create_database(gpus, var_dir)
    cluster = inv.fresh_cluster("bench-c00", dc)
    sync = inv.run_sync_subprocess(cluster.pk, var_dir)
    cluster = Cluster.objects.get(pk=cluster.pk)
    if gpus >= 1_000_000:
        for k in range(1, COPIES + 1):
            inv.copy_cluster(cluster, f"bench-c{k:02d}")
    now = dt.datetime.now(dt.UTC)
    rows = {**busy_tenant(), **add_telemetry(now), **add_operations(), **add_capacity(now)}
    inv.settle_database()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    return {
        "gpus": gpus,
        "clusters": Cluster.objects.count(),
        "nodes": Node.objects.count(),
        "workloads": GpuWorkload.objects.count(),
        "gpus_held": sum(GpuWorkload.objects.values_list("gpus_held", flat=True)),
        "sync_s": sync["seconds"],
        "rows": rows,
        "build_s": time.perf_counter() - started,
        "database_size": size,
    }


def build_all(sizes: list[int], workdir: Path, var_dir: Path) -> dict[int, dict]:
    from devcluster.testing import run_devcluster

    built: dict[int, dict] = {}
    for fleet in dict.fromkeys(FLEETS[min(s, 100_000)] for s in sizes):
        started = time.perf_counter()
        with run_devcluster(
            workdir / f"dc-{fleet.replace(':', '-')}", fleet=fleet, speed=50.0, ready_timeout=900
        ) as dc:
            up = time.perf_counter() - started
            for gpus in [s for s in sizes if FLEETS[min(s, 100_000)] == fleet]:
                built[gpus] = {**build(gpus, dc, var_dir), "devcluster_start_s": up}
                print(f"built {gpus:,} GPUs: {built[gpus]}", flush=True)
    return built


# --- the pages --------------------------------------------------------------------------------


def pages() -> dict[str, tuple[str, str]]:
    """Figure prefix -> (who, URL)."""
    t = TENANT
    return {
        "inventory.page.overview": ("admin", "/inventory/"),
        "inventory.page.nodes_first_page": ("admin", "/inventory/nodes/"),
        "inventory.page.nodes_last_page": ("admin", "/inventory/nodes/?page=last"),
        "inventory.page.nodes_filtered": ("admin", "/inventory/nodes/?health=ready&has_free=yes"),
        "inventory.page.nodes_search_broad": ("admin", "/inventory/nodes/?" + urlencode({"q": BROAD})),
        "inventory.page.nodes_search_exact": ("admin", "/inventory/nodes/?" + urlencode({"q": EXACT})),
        "inventory.page.catalog": ("tenant", "/"),
        "inventory.page.my_gpus": ("tenant", f"/tenants/{t}/gpus/"),
        "inventory.page.tenants": ("admin", "/tenants/"),
        "utilization.page.fleet": ("admin", "/utilization/"),
        "utilization.page.fleet_chart": ("admin", "/utilization/charts/fleet/?range=24h"),
        "utilization.page.allocation_chart": ("admin", "/utilization/charts/allocation/?range=24h"),
        "utilization.page.heatmap": ("admin", "/utilization/heatmap/"),
        "utilization.page.heatmap_chart": ("admin", "/utilization/charts/heatmap/?range=24h&by=node&offset=0"),
        "utilization.page.heatmap_host_chart": ("admin", "/utilization/charts/heatmap/?range=24h&by=host&offset=0"),
        "utilization.page.idle": ("admin", "/utilization/idle/"),
        "utilization.page.health": ("admin", "/utilization/health/"),
        "utilization.page.energy": ("admin", "/utilization/energy/"),
        "utilization.page.energy_by_node": ("admin", "/utilization/energy/?by=node"),
        "utilization.page.tenant": ("tenant", f"/tenants/{t}/utilization/"),
        "utilization.page.tenant_chart": ("tenant", f"/utilization/charts/tenant/?range=24h&tenant={t}"),
        "provisioning.page.audit": ("admin", "/audit/"),
        "provisioning.page.operations": ("tenant", f"/tenants/{t}/operations/"),
        "capacity.page.capacity": ("admin", "/capacity/"),
        "capacity.page.fleet_operations": ("admin", "/capacity/operations/"),
    }  # fmt: skip


def users_and_sessions() -> dict[str, str]:
    """The admin and the tenant user (an operator of TENANT) in this size's schema, and a
    session cookie for each."""
    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    from gpus.tenancy.choices import MembershipRole
    from gpus.tenancy.models import Membership, Tenant

    model = get_user_model()
    admin, _ = model.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    alice, _ = model.objects.get_or_create(username="bench-alice")
    Membership.objects.get_or_create(
        user=alice, tenant=Tenant.objects.get(namespace=TENANT),
        defaults={"role": MembershipRole.OPERATOR},
    )  # fmt: skip
    cookies = {}
    for who, user in (("admin", admin), ("tenant", alice)):
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies[who] = f"{settings.SESSION_COOKIE_NAME}={session.session_key}"
    return cookies


def query_counts(gpus: int, var_dir: Path) -> dict[str, int]:
    """Each page's SQL queries, in-process on this size's schema (after one warm request)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    inv.use_database(gpus, var_dir)
    clients = {"admin": Client(), "tenant": Client()}
    clients["admin"].force_login(get_user_model().objects.get(username="bench-admin"))
    clients["tenant"].force_login(get_user_model().objects.get(username="bench-alice"))
    out = {}
    for name, (who, url) in pages().items():
        clients[who].get(url)
        with CaptureQueriesContext(connection) as ctx:
            response = clients[who].get(url)
        assert response.status_code == 200, (gpus, url, response.status_code)
        out[name] = len(ctx.captured_queries)
    return out


# --- gunicorn and the client ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn for one size: its schema (PGOPTIONS), its Redis cache database, an access log
    naming the worker of every request (to count each worker's requests)."""

    def __init__(self, gpus: int, index: int, var_dir: Path) -> None:
        self.gpus = gpus
        self.port = free_port()
        self.access = var_dir / f"access-{gpus}.log"
        self.log = var_dir / f"gunicorn-{gpus}.log"
        cache = re.sub(r"/\d+$", f"/{10 + index}", os.environ.get("CACHE_URL", ""))
        env = {
            **os.environ,
            "PGOPTIONS": f"-c search_path=bench_{gpus}",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(WORKERS),
            "CACHE_URL": cache or os.environ.get("CACHE_URL", ""),
        }
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:hikube_portal.gunicorn_conf",
             "--access-logfile", str(self.access), "--access-logformat", "%(p)s %(s)s %(U)s",
             "hikube_portal.wsgi:application"],
            cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-3000:])
            try:
                if get(self.port, "/healthz", "")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn for {gpus} did not answer")

    def workers(self) -> dict[int, int]:
        """Worker pid -> requests it served (from the access log)."""
        counts: Counter[int] = Counter()
        if self.access.exists():
            for line in self.access.read_text().splitlines():
                pid = line.split(" ", 1)[0].lstrip("<").rstrip(">")
                if pid.isdigit():
                    counts[int(pid)] += 1
        return dict(counts)

    def rss_mb(self) -> dict[int, float]:
        out = {}
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in map(int, children):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[pid] = int(line.split()[1]) / 1024
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def get(port: int, path: str, cookie: str) -> tuple[int, bytes, int, str]:
    """Status, body as sent, bytes on the wire (status line, headers and body), encoding."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "GET", path,
            headers={"Cookie": cookie, "Host": "127.0.0.1", "Accept-Encoding": ACCEPT_ENCODING},
        )  # fmt: skip
        response = conn.getresponse()
        body = response.read()
        head = 17 + sum(len(k) + len(v) + 4 for k, v in response.getheaders()) + 2
        return response.status, body, head + len(body), response.getheader("Content-Encoding", "")
    finally:
        conn.close()


def decoded(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "br":
        import brotli

        return brotli.decompress(body)
    return body


def measure(servers: dict[int, Server], cookies: dict[int, dict[str, str]], requests: int) -> dict:
    """Pages in turn, each at every size in turn, WARMUP + requests rounds."""
    urls = pages()
    timings: dict[tuple[str, int], list[float]] = {(p, g): [] for p in urls for g in servers}
    loads: dict[str, list[float]] = {p: [] for p in urls}
    wire: dict[tuple[str, int], dict] = {}
    for i in range(WARMUP + requests):
        for name, (who, url) in urls.items():
            loads[name].append(os.getloadavg()[0])
            for gpus, server in servers.items():
                started = time.perf_counter()
                status, body, size, encoding = get(server.port, url, cookies[gpus][who])
                elapsed = (time.perf_counter() - started) * 1000
                assert status == 200, (gpus, url, status, body[:300])
                if i >= WARMUP:
                    timings[(name, gpus)].append(elapsed)
                if i == WARMUP:
                    raw = decoded(body, encoding)
                    wire[(name, gpus)] = {"bytes": size, "encoding": encoding or "identity",
                                          "raw_bytes": len(raw)}  # fmt: skip
                    check(name, gpus, raw)
        print(f"round {i + 1}/{WARMUP + requests}, load {os.getloadavg()[0]:.2f}", flush=True)
    out: dict[str, Any] = {}
    for (name, gpus), values in timings.items():
        out.setdefault(name, {})[gpus] = {
            "p50": statistics.median(values),
            "p95": percentile(values, 95),
            "n": len(values),
            **wire[(name, gpus)],
        }
    for name in urls:
        out[name]["load"] = f"load {min(loads[name]):.2f}-{max(loads[name]):.2f}"
    return out


def check(name: str, gpus: int, body: bytes) -> None:
    """The page read the right rows: what each one must show at every size."""
    must = {
        "inventory.page.nodes_search_exact": EXACT.encode(),
        "inventory.page.nodes_search_broad": b"gpu-l40s-00001",
        "inventory.page.my_gpus": b"k8s-0",
        "utilization.page.heatmap_chart": b"heatmap",
        "utilization.page.heatmap_host_chart": b"heatmap",
        "utilization.page.tenant_chart": b'"figure"',
        "provisioning.page.operations": b"k8s-0",
    }.get(name)
    assert must is None or must in body, (name, gpus, must, body[:500])


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(pct / 100 * len(ordered)) - 1)]


def worker_rss(
    servers: dict[int, Server], cookies: dict[int, dict[str, str]], per_worker: int
) -> dict:
    """Every page in turn at every size until each worker of each server has served
    RSS_REQUESTS requests; then each worker's resident memory."""
    urls = list(pages().values())
    loads = [os.getloadavg()[0]]
    i = 0
    while True:
        pending = {g: s for g, s in servers.items()
                   if len(s.workers()) < WORKERS or min(s.workers().values()) < per_worker}  # fmt: skip
        if not pending:
            break
        for _ in range(50):
            who, url = urls[i % len(urls)]
            i += 1
            for gpus, server in pending.items():
                status, *_ = get(server.port, url, cookies[gpus][who])
                assert status == 200, (gpus, url, status)
        loads.append(os.getloadavg()[0])
    out = {}
    for gpus, server in servers.items():
        rss = server.rss_mb()
        out[gpus] = {"rss": rss, "served": server.workers(), "per_worker": per_worker,
                     "load": f"load {min(loads):.2f}-{max(loads):.2f}"}  # fmt: skip
    return out


# --- figures and report -----------------------------------------------------------------------


def figures(results: dict, counts: dict[int, dict], rss: dict, sizes: list[int]) -> list[dict]:
    from bench.results import figure

    out = []
    base = min(sizes)
    for name, by_size in results.items():
        load = by_size["load"]
        for gpus in sizes:
            r = by_size[gpus]
            note = f"{load}; {r['n']} requests over HTTP (gunicorn, {WORKERS} workers)"
            out.append(
                figure(f"{name}.http_p95_ms@{gpus}", round(r["p95"], 1), "ms",
                       f"<= {P95_TARGET_MS:g} ({note})", r["p95"] <= P95_TARGET_MS,
                       p50=round(r["p50"], 1), load_average=load, requests=r["n"])
            )  # fmt: skip
            out.append(
                figure(f"{name}.wire_kb@{gpus}", round(r["bytes"] / 1024, 1), "KB",
                       f"<= {WIRE_TARGET_KB:g} as sent for Accept-Encoding: {ACCEPT_ENCODING} "
                       f"({load})",
                       r["bytes"] <= WIRE_TARGET_KB * 1024,
                       content_encoding=r["encoding"], decoded_kb=round(r["raw_bytes"] / 1024, 1),
                       load_average=load)
            )  # fmt: skip
            q, q0 = counts[gpus][name], counts[base][name]
            out.append(
                figure(f"{name}.queries@{gpus}", q, "queries",
                       f"== {q0} (as at {base:,} GPUs)", q == q0)
            )  # fmt: skip
            if gpus != base:
                ratio = r["p95"] / by_size[base]["p95"]
                out.append(
                    figure(f"{name}.http_p95_ratio@{gpus}", round(ratio, 2), "x",
                           f"<= {RATIO_TARGET:g} (p95 at {gpus:,} / p95 at {base:,} GPUs; {load})",
                           ratio <= RATIO_TARGET, load_average=load,
                           p50_ratio=round(r["p50"] / by_size[base]["p50"], 2))
                )  # fmt: skip
    for gpus, r in rss.items():
        worst = max(r["rss"].values())
        out.append(
            figure(f"inventory.pages.worker_rss_mb@{gpus}", round(worst, 1), "MB",
                   f"< 300 per gunicorn worker after >= {r['per_worker']} requests of every page "
                   f"({r['load']})", worst < 300,
                   workers={str(k): round(v, 1) for k, v in r["rss"].items()},
                   requests_served={str(k): v for k, v in r["served"].items()},
                   load_average=r["load"])
        )  # fmt: skip
    return out


def report(results: dict, counts: dict, rss: dict, built: dict, sizes: list[int], cmd: str) -> str:
    base = min(sizes)
    lines = [
        "# Every page over HTTP",
        "",
        f"Command: `{cmd}`. gunicorn ({WORKERS} workers, production settings) per size on "
        f"PostgreSQL, the three at once; {REQUESTS} requests per page and size after {WARMUP} "
        "untimed, pages and sizes interleaved in one loop; p50/p95 of those requests (no best-of)."
        f" Wire: status line, headers and body as sent for `Accept-Encoding: {ACCEPT_ENCODING}`."
        " Queries: the same request in-process (Django test client) on the same schema. Load: the"
        f" 1-minute load average around each page's requests ({os.cpu_count()} cores, shared).",
        "",
        "Fleets (see bench/bench_pages.py): devcluster `scale:125` and `scale` (the demo fleet's "
        "workloads in its proportions) synced; 1,000,000 = the 100,000 under ten cluster records;"
        " query-API-mode telemetry, operations and capacity rows written from the workloads.",
        "",
        "| GPUs | clusters | nodes | workloads | GPUs held | devices | group rollups | database |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in sizes:
        b = built[g]
        groups = sum(v for k, v in b["rows"].items() if k.startswith("grouprollup"))
        lines.append(
            f"| {g:,} | {b['clusters']} | {b['nodes']:,} | {b['workloads']:,} | "
            f"{b['gpus_held']:,} | {b['rows']['gpudevice']:,} | {groups:,} | {b['database_size']} |"
        )
    head = " | ".join(f"p50/p95 @{g:,}" for g in sizes)
    wire = " | ".join(f"KB @{g:,}" for g in sizes)
    lines += [
        "",
        f"Targets: p95 <= {P95_TARGET_MS:g} ms, p95 at each size within {RATIO_TARGET:g}x of "
        f"{base:,} GPUs, the same queries at every size. MISS marks a page that misses one.",
        "",
        f"| page | {head} | ratio | {wire} | queries | load | ok |",
        "|---|" + "---:|" * (2 * len(sizes) + 2) + "---|---|",
    ]
    for name, by_size in results.items():
        times = " | ".join(f"{by_size[g]['p50']:.0f}/{by_size[g]['p95']:.0f}" for g in sizes)
        kb = " | ".join(
            f"{by_size[g]['bytes'] / 1024:.1f}"
            + (" gz" if by_size[g]["encoding"] == "gzip" else "")
            + (" br" if by_size[g]["encoding"] == "br" else "")
            for g in sizes
        )
        ratio = by_size[max(sizes)]["p95"] / by_size[base]["p95"]
        queries = "/".join(str(counts[g][name]) for g in sizes)
        ok = (
            all(by_size[g]["p95"] <= P95_TARGET_MS for g in sizes)
            and all(by_size[g]["p95"] / by_size[base]["p95"] <= RATIO_TARGET for g in sizes)
            and len({counts[g][name] for g in sizes}) == 1
        )
        lines.append(
            f"| {name} | {times} | {ratio:.2f}x | {kb} | {queries} | {by_size['load']} | "
            f"{'ok' if ok else 'MISS'} |"
        )
    lines += ["", "| GPUs | worker RSS after its requests (MB) | requests per worker | load |",
              "|---:|---|---|---|"]  # fmt: skip
    for g in sizes:
        r = rss[g]
        mb = ", ".join(f"{v:.0f}" for v in r["rss"].values())
        served = ", ".join(str(v) for v in r["served"].values())
        lines.append(f"| {g:,} | {mb} | {served} | {r['load']} |")
    lines += ["", "Build: " + "; ".join(
        f"{g:,} GPUs {built[g]['build_s']:.0f} s (sync {built[g]['sync_s']:.0f} s, devcluster "
        f"start {built[g]['devcluster_start_s']:.0f} s)" for g in sizes) + ".", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--rss-requests", type=int, default=RSS_REQUESTS)
    parser.add_argument("--no-record", action="store_true", help="print, write no results")
    # A smaller stand-in for the scale fleet (e.g. scale:275), to try the script quickly.
    parser.add_argument("--scale-fleet", default=FLEETS[100_000])
    # A folder kept between runs for the collected static files (collected once).
    parser.add_argument("--static-cache")
    # Keep the built schemas (and what was built, in KEPT) for a later --reuse run, which
    # migrates them and measures again without the 1,000,000-GPU build (15+ minutes).
    parser.add_argument("--keep", action="store_true", help="keep the built schemas")
    parser.add_argument("--reuse", action="store_true", help="measure the kept schemas")
    parser.add_argument("--build-only", action="store_true", help="build and keep, measure nothing")
    args = parser.parse_args()
    FLEETS[100_000] = args.scale_fleet
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("bench_pages.py measures PostgreSQL only: set DATABASE_URL=postgres://... (not run)")
        return
    # The syncs (subprocesses) read the 12,500-node fleet with its 9,088 apps from devcluster on
    # a shared, loaded machine: a request may wait longer than the default 10 s there.
    os.environ.setdefault("CLUSTER_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("INVENTORY_SYNC_RETRY_BUDGET", "10")
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        workdir = Path(tmp)
        var_dir = workdir / "var"
        var_dir.mkdir()
        if args.static_cache:
            Path(args.static_cache).mkdir(parents=True, exist_ok=True)
            (var_dir / "static").symlink_to(Path(args.static_cache).resolve())
        setup_production_django(var_dir, allowed_hosts="127.0.0.1,testserver")
        from django.core.management import call_command

        if not (var_dir / "static" / "staticfiles.json").exists():  # else collected before
            call_command("collectstatic", "--noinput", verbosity=0)
        if args.reuse:
            built = {int(k): v for k, v in json.loads(KEPT.read_text()).items()}
            for gpus in sizes:
                inv.use_database(gpus, var_dir)
                call_command("migrate", verbosity=0)
                inv.settle_database()
        else:
            built = build_all(sizes, workdir, var_dir)
        if args.keep or args.build_only:
            KEPT.write_text(json.dumps(built, default=str))
        if args.build_only:
            return
        cookies, counts = {}, {}
        for gpus in sizes:
            inv.use_database(gpus, var_dir)
            cookies[gpus] = users_and_sessions()
            counts[gpus] = query_counts(gpus, var_dir)
        from django.db import connection

        connection.close()
        servers: dict[int, Server] = {}
        try:
            for index, gpus in enumerate(sizes):
                servers[gpus] = Server(gpus, index, var_dir)
            results = measure(servers, cookies, args.requests)
            rss = worker_rss(servers, cookies, args.rss_requests)
        finally:
            for server in servers.values():
                server.stop()
        if not args.keep:
            inv.drop_databases(sizes)
    cmd = "DATABASE_URL=postgres://... .venv/bin/python bench/bench_pages.py"
    text = report(results, counts, rss, built, sizes, cmd)
    print(text)
    if not args.no_record:
        from bench.results import record

        record(figures(results, counts, rss, sizes))
        (RESULTS_DIR / "pages.md").write_text(text)


if __name__ == "__main__":
    main()
