"""Fixtures every app's tests share: personas (the people who use the portal), a synced
snapshot, real Celery workers. Loaded by the root conftest.py as a pytest plugin."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.cache.backends.base import BaseCache
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import NodeHealth, ResourceState, WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload, Node, NodeGpu, ServedSchema
from gpus.inventory.sync import Written, store_catalogue, store_snapshot
from gpus.kube import records
from gpus.kube.records import FleetReading, GpuPod, NodeInfo
from gpus.tenancy.choices import MembershipRole
from gpus.tenancy.models import Membership, Tenant

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def _plain_static_storage_in_browsers(request):
    """live_server serves /static/ through the finders, which know no manifest names: browser
    tests use plain static storage."""
    if request.node.get_closest_marker("browser") is None:
        return
    settings = request.getfixturevalue("settings")
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def log_in(page, live_server) -> Callable[[str], None]:
    """log_in(username): sign a persona in through the login page in the browser."""

    def log_in(username: str) -> None:
        page.goto(live_server.url + reverse("login"))
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(live_server.url + reverse("gpus:catalog"))

    return log_in


@pytest.fixture(autouse=True)
def _default_language():
    """LocaleMiddleware leaves a request's language active in the thread: reset it after each
    test so a French page request does not make the next test's plain gettext French."""
    from django.utils import translation

    yield
    translation.deactivate()


class NoCache(BaseCache):
    """Django's cache in a test the root conftest did not mark `backends` (it uses no database,
    broker or cache fixture): any use fails, so the mark, which picks the tests the embedded pass
    runs again, cannot miss a test that needs the cache. Mark such a test `backends`."""

    def __init__(self, location: str, params: dict) -> None:
        super().__init__(params)

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise AssertionError(
            "this test uses Django's cache but is not marked `backends`: mark it "
            "(@pytest.mark.backends) so the embedded pass runs it too"
        )

    add = get = set = touch = delete = has_key = clear = _refuse
    get_many = set_many = delete_many = incr = decr = _refuse


@pytest.fixture(autouse=True)
def _fresh_cache(request):
    """Cached counts are keyed by snapshot time; tests reuse times and ids, so start empty.
    Tests that use no backend get a cache that refuses every use (NoCache)."""
    if request.node.get_closest_marker("backends") is None:
        with override_settings(CACHES={"default": {"BACKEND": "gpus.testing.NoCache"}}):
            yield
        return
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def acme(db) -> Tenant:
    # update_or_create: a sync may have picked the namespace up already.
    return Tenant.objects.update_or_create(
        namespace="tenant-acme", defaults={"display_name": "Acme Corp"}
    )[0]


@pytest.fixture
def globex(db) -> Tenant:
    return Tenant.objects.update_or_create(
        namespace="tenant-globex", defaults={"display_name": "Globex"}
    )[0]


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


def seed_catalog() -> None:
    """What the catalog's data migration writes, written again (it is idempotent)."""
    importlib.import_module("gpus.catalog.migrations.0002_seed_catalog").seed(django_apps, None)
    importlib.import_module("gpus.catalog.migrations.0003_datasheet_figures").apply(
        django_apps, None
    )


@pytest.fixture
def seeded_catalog(transactional_db):
    """The GPU catalog the data migration seeds. Transactional tests (browser, real worker) flush
    the database after each test, so they seed it again rather than rely on the migration."""
    seed_catalog()


@pytest.fixture(autouse=True)
def _catalog_as_migrated(request):
    """Tests in a rolled-back transaction expect the catalog the migration seeded. A transactional
    test (browser, real worker) flushes it when it ends, and under pytest-xdist a later test on
    the same worker would find it gone: seed it again inside the test's transaction."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None and "db" not in request.fixturenames:
        return
    if "transactional_db" in request.fixturenames or (
        marker is not None and marker.kwargs.get("transaction", False)
    ):
        return  # these flush anyway; the ones that need the catalog use seeded_catalog
    request.getfixturevalue("db")
    if not GpuModel.objects.exists():
        seed_catalog()


# --- a synced snapshot, for the pages ---------------------------------------------------

L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"


def node_info(name: str, gpus: dict[str, int], **extra) -> NodeInfo:
    return NodeInfo(
        name=name,
        labels={"kubernetes.io/hostname": name},
        allocatable={},
        capacity={},
        ready=extra.get("ready", True),
        unschedulable=extra.get("cordoned", False),
        taints=extra.get("taints", []),
        gpu_resources=gpus,
        conditions=(
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"},
            {"type": "MemoryPressure", "status": "False", "reason": "Sufficient", "message": ""},
        ),
    )


@pytest.fixture
def snapshot(acme, globex) -> Cluster:
    """A synced cluster: two nodes, GPUs held by both tenants, and acme's workloads."""
    cluster = Cluster.objects.create(name="prod", last_synced_at=timezone.now())
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    pods = [
        GpuPod(
            namespace="tenant-acme",
            name="virt-launcher-vm-instance-ws-abcde",
            node_name="gpu-l40s-worker-01",
            phase="Running",
            gpus={L40S: 1},
            labels={"vm.kubevirt.io/name": "vm-instance-ws"},
        ),
        GpuPod(
            namespace="tenant-globex",
            name="trainer-0",
            node_name="gpu-h100-worker-01",
            phase="Running",
            gpus={H100: 2},
            labels={},
            owner_kind="StatefulSet",
            owner_name="trainer",
        ),
    ]
    reading = FleetReading(
        nodes=[
            node_info("gpu-l40s-worker-01", {L40S: 4}, taints=[taint]),
            node_info("gpu-h100-worker-01", {H100: 8}),
        ],
        pods=pods,
        vm_kind="VMInstance",
        disk_field="ephemeralStorage",
    )
    store_snapshot(cluster, reading, timezone.now())
    offer_catalogue(cluster)
    l40s = GpuModel.objects.get(resource_name=L40S)
    GpuWorkload.objects.create(
        cluster=cluster,
        tenant=acme,
        kind=WorkloadKind.VM,
        app_kind="VMInstance",
        name="ws",
        gpu_model=l40s,
        gpus_per_instance=1,
        gpus_held=0,
        state=ResourceState.STARTING,
        reason="PodNotReady",
        message="virt-launcher pod is not ready",
    )
    GpuWorkload.objects.create(
        cluster=cluster,
        tenant=acme,
        kind=WorkloadKind.NODE_GROUP,
        app_kind="Kubernetes",
        name="k8s",
        node_group="gpu",
        gpu_model=l40s,
        gpus_per_instance=2,
        instances=1,
        gpus_held=2,
        state=ResourceState.RUNNING,
    )
    return cluster


@pytest.fixture
def make_nodes(db) -> Callable[..., list[Node]]:
    """make_nodes(cluster, count, model, prefix="gpu"): `count` nodes with few distinct sort
    values (many equal keys), and their GPU rows."""

    def make_nodes(cluster: Cluster, count: int, model: GpuModel, prefix: str = "gpu") -> list:
        health = [NodeHealth.READY, NodeHealth.READY, NodeHealth.CORDONED, NodeHealth.NOT_READY]
        fields = {f.name for f in Node._meta.fields}
        rows = []
        for i in range(count):
            extra = {"synced_at": timezone.now()} if "synced_at" in fields else {}
            rows.append(
                Node(
                    cluster=cluster,
                    name=f"{prefix}-{i % 7:02d}-{i:04d}",
                    health=health[i % 4],
                    gpu_installed=8,
                    gpu_allocated=i % 3,
                    gpu_free=8 - i % 3 if i % 4 < 2 else 0,
                    gpu_model=model,
                    labels={"big": "x" * 200},
                    **extra,
                )
            )
        Node.objects.bulk_create(rows)
        nodes = list(Node.objects.filter(cluster=cluster, name__startswith=f"{prefix}-"))
        NodeGpu.objects.bulk_create(
            NodeGpu(
                node=n, gpu_model=model, installed=8, allocated=n.gpu_allocated, free=n.gpu_free
            )
            for n in nodes
        )
        return nodes

    return make_nodes


# --- what a v1.1 cluster offers the forms, without a devcluster ------------------------------


def offer_catalogue(cluster: Cluster) -> Cluster:
    """Store what devcluster serves (the v1.1 instance types, preferences, golden images,
    storage classes and chart schemas) as the sync and the schema task would: for tests that
    post the forms against a cluster made by hand."""
    from devcluster.catalogue import catalogue_objects
    from devcluster.resources import DATAVOLUMES, INSTANCETYPES, PREFERENCES, STORAGECLASSES
    from devcluster.schemas import load_schema

    kinds = {
        INSTANCETYPES.key: records.INSTANCE_TYPE,
        PREFERENCES.key: records.PREFERENCE,
        DATAVOLUMES.key: records.IMAGE,
        STORAGECLASSES.key: records.STORAGE_CLASS,
    }
    catalogue: dict[str, list[records.CatalogueItem]] = {}
    for key, obj in catalogue_objects(0.0):
        item = records.catalogue_item_from_json(kinds[key], obj)
        if item is not None:
            catalogue.setdefault(item.kind, []).append(item)
    store_catalogue(Written(), cluster, catalogue)
    for kind, file in (
        ("VMInstance", "vminstance.v1.1.0.json"),
        ("VMDisk", "vmdisk.v1.1.0.json"),
        ("Kubernetes", "kubernetes.v1.1.0.json"),
        ("VirtualMachine", "virtualmachine.legacy.json"),
    ):
        ServedSchema.objects.update_or_create(
            cluster=cluster,
            app_kind=kind,
            defaults={"schema": load_schema(file), "fetched_at": timezone.now()},
        )
    return cluster
