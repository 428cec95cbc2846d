"""The snapshot: what the cluster showed at the last sync (DESIGN rule 8); only the sync
writes it."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import (
    SYNC_ERROR_SENTENCES,
    NodeHealth,
    ResourceState,
    SyncErrorKind,
    WorkloadKind,
)
from gpus.inventory.reasons import explain
from gpus.tenancy.models import Tenant


class Cluster(models.Model):
    """A Cozystack management cluster the portal reads and writes, and its last sync."""

    name = models.SlugField(_("name"), max_length=63, unique=True)
    kubeconfig = models.CharField(_("kubeconfig path"), max_length=500, blank=True)
    context = models.CharField(_("kubeconfig context"), max_length=200, blank=True)
    in_cluster = models.BooleanField(_("in-cluster config"), default=False)
    # Discovered from the served API (see gpus.kube.discovery).
    vm_kind = models.CharField(_("VM kind"), max_length=40, blank=True)
    node_group_disk_field = models.CharField(_("node-group disk field"), max_length=40, blank=True)
    last_synced_at = models.DateTimeField(_("last successful sync"), null=True, blank=True)
    last_attempt_at = models.DateTimeField(_("last sync attempt"), null=True, blank=True)
    last_sync_seconds = models.FloatField(_("last sync duration (s)"), null=True, blank=True)
    last_error = models.TextField(_("last sync error"), blank=True)
    # What kind of failure last_error is: shown in the reader's language, the raw text beside.
    last_error_kind = models.CharField(
        _("kind of the last sync error"),
        max_length=16,
        choices=SyncErrorKind.choices,
        blank=True,
    )
    unreachable_since = models.DateTimeField(_("unreachable since"), null=True, blank=True)
    last_sync_rows = models.PositiveIntegerField(
        _("rows written by the last sync"), null=True, blank=True
    )
    # Failed syncs in a row, and when the scheduled sync may try again (the cluster backs off).
    consecutive_failures = models.PositiveIntegerField(_("failed syncs in a row"), default=0)
    next_sync_at = models.DateTimeField(_("next scheduled sync"), null=True, blank=True)
    # One sync per cluster at a time: the running sync's lease (see gpus.inventory.sync).
    sync_lease = models.CharField(max_length=32, blank=True, editable=False)
    sync_lease_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = _("cluster")
        verbose_name_plural = _("clusters")

    def __str__(self) -> str:
        return self.name

    def monitoring_for(self, namespace: str) -> str:
        """The tenant namespace that runs monitoring for `namespace` ("" for none)."""
        tenants = (
            ClusterMonitoring.objects.filter(cluster=self).values_list("tenants", flat=True).first()
        )
        return str((tenants or {}).get(namespace) or "")

    @property
    def error_sentence(self) -> str:
        """Why the last sync failed, in plain words in the active language ("" if it did not)."""
        if not self.last_error and not self.last_error_kind:
            return ""
        sentence = SYNC_ERROR_SENTENCES.get(
            self.last_error_kind, SYNC_ERROR_SENTENCES[SyncErrorKind.UNEXPECTED]
        )
        return str(sentence) % {"name": self.name}


class Node(models.Model):
    """A host node of the snapshot, with its GPU totals denormalized for fast lists."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(_("name"), max_length=253)
    health = models.CharField(_("health"), max_length=16, choices=NodeHealth.choices)
    ready = models.BooleanField(_("ready"), default=True)
    unschedulable = models.BooleanField(_("cordoned"), default=False)
    taints = models.JSONField(_("taints"), default=list, blank=True)
    labels = models.JSONField(_("labels"), default=dict, blank=True)
    conditions = models.JSONField(_("conditions"), default=list, blank=True)
    # Who holds the node's GPUs: [{"namespace", "pod", "workload", "resource", "count"}].
    holders = models.JSONField(_("GPU holders"), default=list, blank=True)
    gpu_installed = models.PositiveIntegerField(_("GPUs installed"), default=0)
    gpu_allocated = models.PositiveIntegerField(_("GPUs allocated"), default=0)
    gpu_free = models.PositiveIntegerField(_("GPUs free"), default=0)
    # Hash of labels and taints: the sync compares it instead of reading the JSON back.
    fingerprint = models.CharField(max_length=32, blank=True, editable=False)
    # The GPU model the node serves when it serves exactly one (nearly always); empty for a
    # node with none or several (those are found through NodeGpu). Lets the node list filtered
    # by model walk the (gpu_model, sort key) indexes below instead of every node.
    gpu_model = models.ForeignKey(
        GpuModel,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="single_model_nodes",
        editable=False,
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "name"], name="unique_node_per_cluster")
        ]
        # One index per sort of the node list, ending in (name, id): the keyset the pages walk,
        # so any page (first, last, next) is an index range, whatever the fleet size. The
        # cluster sort uses the unique (cluster, name) index (names are unique per cluster).
        indexes = [
            models.Index(fields=["name", "id"], name="node_name_key_idx"),
            models.Index(fields=["health", "name", "id"], name="node_health_key_idx"),
            models.Index(fields=["gpu_free", "name", "id"], name="node_free_key_idx"),
            models.Index(fields=["gpu_allocated", "name", "id"], name="node_allocated_key_idx"),
            models.Index(fields=["gpu_installed", "name", "id"], name="node_installed_key_idx"),
            # "Has free GPUs" (gpu_free > 0) in name order, alone or with a health: a range of
            # its own. The (health, name) index skipped every full node first, and a fleet's
            # full nodes grow with it (5,680 rows read for a page at 1,000,000 GPUs).
            models.Index(
                fields=["name", "id"], condition=Q(gpu_free__gt=0), name="node_has_free_key_idx"
            ),
            models.Index(
                fields=["health", "name", "id"],
                condition=Q(gpu_free__gt=0),
                name="node_has_free_health_key_idx",
            ),
            # The same sorts within one GPU model (the list filtered by model).
            models.Index(fields=["gpu_model", "name", "id"], name="node_model_name_key_idx"),
            models.Index(
                fields=["gpu_model", "cluster", "name"], name="node_model_cluster_key_idx"
            ),
            models.Index(
                fields=["gpu_model", "health", "name", "id"], name="node_model_health_key_idx"
            ),
            models.Index(
                fields=["gpu_model", "gpu_free", "name", "id"], name="node_model_free_key_idx"
            ),
            models.Index(
                fields=["gpu_model", "gpu_allocated", "name", "id"],
                name="node_model_allocated_key_idx",
            ),
            models.Index(
                fields=["gpu_model", "gpu_installed", "name", "id"],
                name="node_model_installed_key_idx",
            ),
        ]
        verbose_name = _("node")
        verbose_name_plural = _("nodes")

    def __str__(self) -> str:
        return self.name


class NodeNameGram(models.Model):
    """Each three-character piece of a node's name (upper case), with the name: the name search's
    index on PostgreSQL (see inventory.selectors.name_gram_matches). Its primary key (gram, name,
    node) holds, for any piece, the nodes containing it in name order, so a page of matches is a
    range of it. Written only by triggers on the node table (migration 0008), whatever inserts,
    renames or deletes nodes. SQLite has no such triggers: the table stays empty there, unread."""

    pk = models.CompositePrimaryKey("gram", "name", "node")
    gram = models.CharField(max_length=3)
    name = models.CharField(max_length=253)
    # The triggers delete a node's rows; no constraint, so a node's DELETE or TRUNCATE (the test
    # database's flush) needs no cascade, and Django's collector leaves the rows alone.
    node = models.ForeignKey(
        "Node", on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )

    def __str__(self) -> str:
        return f"{self.gram} in {self.name}"


class NodeGpu(models.Model):
    """GPUs of one model on one node: what the node advertises and what pods hold."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.PROTECT, related_name="node_gpus")
    installed = models.PositiveIntegerField(default=0)
    allocated = models.PositiveIntegerField(default=0)
    free = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "gpu_model"], name="unique_node_gpu_model")
        ]
        indexes = [models.Index(fields=["gpu_model", "free"], name="nodegpu_model_free_idx")]

    def __str__(self) -> str:
        return f"{self.gpu_model} x{self.installed} on {self.node}"

    @property
    def unavailable(self) -> int:
        """Installed but neither held nor offered: an unhealthy GPU (capacity, not allocatable)
        or an idle one on a cordoned or NotReady node."""
        return max(self.installed - self.allocated - self.free, 0)


class ModelInventory(models.Model):
    """Per cluster and GPU model: the totals the overview shows, computed at each sync."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="model_totals")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.PROTECT, related_name="totals")
    installed = models.PositiveIntegerField(default=0)
    allocated = models.PositiveIntegerField(default=0)
    free = models.PositiveIntegerField(default=0)
    # On nodes that are not ready or cordoned, and not allocated: installed but not rentable.
    unavailable = models.PositiveIntegerField(default=0)
    # Nodes serving this model beside another one (their Node.gpu_model is empty): when there
    # are none, the node list filtered by model reads Node.gpu_model alone.
    mixed_nodes = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cluster", "gpu_model"], name="unique_model_total")
        ]
        verbose_name = _("model total")
        verbose_name_plural = _("model totals")

    def __str__(self) -> str:
        return f"{self.gpu_model} in {self.cluster}: {self.free} of {self.installed} free"


class TenantAllocation(models.Model):
    """Per cluster, tenant namespace and GPU model: how many GPUs the tenant's pods hold."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="allocations")
    namespace = models.CharField(max_length=63)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.SET_NULL, null=True, blank=True, related_name="allocations"
    )
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.PROTECT, related_name="allocations")
    allocated = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "namespace", "gpu_model"], name="unique_tenant_allocation"
            )
        ]
        # The admin per-tenant table groups by (namespace, model) in this order, a page at a time.
        indexes = [
            models.Index(
                fields=["namespace", "gpu_model", "allocated"], name="allocation_tenant_key_idx"
            )
        ]
        verbose_name = _("tenant allocation")
        verbose_name_plural = _("tenant allocations")

    def __str__(self) -> str:
        return f"{self.namespace}: {self.allocated} x {self.gpu_model}"


class ClusterQuota(models.Model):
    """A GPU limit of a tenant namespace's own ResourceQuota on one cluster, as the inventory
    sync last read it (``requests.nvidia.com/<MODEL>``: the only form the apiserver enforces for
    an extended resource). The portal's quota and this one both apply: the lower one wins."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="quotas")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="cluster_quotas")
    name = models.CharField(_("ResourceQuota"), max_length=253)
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.CASCADE, related_name="cluster_quotas")
    hard = models.PositiveIntegerField(_("limit"))
    used = models.PositiveIntegerField(_("used"), default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "tenant", "name", "gpu_model"], name="unique_cluster_quota"
            )
        ]
        verbose_name = _("cluster GPU quota")
        verbose_name_plural = _("cluster GPU quotas")

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name}: {self.hard} x {self.gpu_model}"


class GpuWorkload(models.Model):
    """A tenant's GPU VM or Kubernetes node group, as the cluster reports it.

    Created by the inventory sync for everything found (including objects made outside the
    portal) and, later, by provisioning. Names are the Cozystack application names.
    """

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="workloads")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="workloads")
    kind = models.CharField(_("kind"), max_length=16, choices=WorkloadKind.choices)
    app_kind = models.CharField(_("Cozystack kind"), max_length=40)
    name = models.CharField(_("name"), max_length=63)
    node_group = models.CharField(_("node group"), max_length=63, blank=True)
    gpu_model = models.ForeignKey(
        GpuModel, on_delete=models.PROTECT, null=True, blank=True, related_name="workloads"
    )
    # The resource name the spec asks for; gpu_model is set only if the catalog knows it.
    gpu_resource = models.CharField(_("GPU resource name"), max_length=253, blank=True)
    gpus_per_instance = models.PositiveIntegerField(_("GPUs per instance"), default=0)
    instances = models.PositiveIntegerField(_("instances"), default=1)
    # What it may grow to: a node group's maxReplicas (the autoscaler adds workers up to it
    # without asking the portal); 1 for a VM. Quotas count this, not what runs now.
    max_instances = models.PositiveIntegerField(_("at most instances"), default=1)
    # A node group's settings as the spec has them (min_replicas, instance_type, disk, roles):
    # what a resize form starts from, so it never changes what the person did not touch.
    group_spec = models.JSONField(_("node group settings"), default=dict, blank=True)
    gpus_held = models.PositiveIntegerField(_("GPUs held"), default=0)
    state = models.CharField(
        _("state"), max_length=16, choices=ResourceState.choices, default=ResourceState.UNKNOWN
    )
    reason = models.CharField(_("reason"), max_length=200, blank=True)
    message = models.TextField(_("message"), blank=True)
    # Set by the sync when it first sees the object (not rewritten at every sync: no dead
    # tuples).
    last_seen_at = models.DateTimeField(_("in the cluster since"), null=True, blank=True)

    class Meta:
        ordering = ["name", "node_group"]
        # My GPUs pages through one tenant's workloads by this key.
        indexes = [
            models.Index(
                fields=["tenant", "name", "node_group", "id"], name="workload_tenant_key_idx"
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "tenant", "kind", "name", "node_group"],
                name="unique_workload",
            )
        ]
        verbose_name = _("GPU workload")
        verbose_name_plural = _("GPU workloads")

    def __str__(self) -> str:
        return f"{self.name}/{self.node_group}" if self.node_group else self.name

    @property
    def gpus_requested(self) -> int:
        return self.gpus_per_instance * self.instances

    @property
    def gpus_at_most(self) -> int:
        """What quotas count: the GPUs it may hold once the autoscaler has grown it."""
        return self.gpus_per_instance * max(self.instances, self.max_instances)

    @property
    def reason_text(self) -> str:
        """The cluster's reason in plain words (translated), "" when the reason is not known."""
        return explain(self.reason, self.message)


class ClusterMonitoring(models.Model):
    """Tenant namespace -> the tenant namespace that runs its monitoring ("" for none), as the
    namespaces' `namespace.cozystack.io/monitoring` labels said at the last sync. A row of its
    own, not a column of Cluster: it holds every tenant (70 KB of JSON at 2,272 tenants), and
    every list that joins its rows' cluster read and decoded it once per row (12 ms of a page
    of 50 operations)."""

    cluster = models.OneToOneField(
        Cluster, on_delete=models.CASCADE, primary_key=True, related_name="monitoring"
    )
    tenants = models.JSONField(_("monitoring tenant per tenant"), default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.cluster} monitoring"


class ServedSchema(models.Model):
    """The OpenAPI v3 spec schema a cluster serves for one app kind, read by a task so forms
    can validate without calling the cluster."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="served_schemas")
    app_kind = models.CharField(max_length=40)
    schema = models.JSONField(default=dict)
    fetched_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cluster", "app_kind"], name="unique_served_schema")
        ]

    def __str__(self) -> str:
        return f"{self.cluster} {self.app_kind}"


class CatalogueEntry(models.Model):
    """Something the cluster offers the forms, as the last sync read it: an instance type, an
    OS profile (preference), a golden image or a storage class. Forms offer only these."""

    class Kind(models.TextChoices):
        INSTANCE_TYPE = "instancetype", _("instance type")
        PREFERENCE = "preference", _("operating system profile")
        IMAGE = "image", _("image")
        STORAGE_CLASS = "storageclass", _("storage class")

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="catalogue")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=253)
    label = models.CharField(max_length=200, blank=True)
    vcpu = models.PositiveIntegerField(default=0)
    memory_mib = models.PositiveBigIntegerField(default=0)
    # An image's operating system family (ubuntu, debian, rocky, ...), from its name: what the
    # forms check the profile, the driver snippet and the login user against.
    os_family = models.CharField(max_length=40, blank=True)
    windows = models.BooleanField(default=False)
    is_default = models.BooleanField(default=False)

    class Meta:
        ordering = ["cluster", "kind", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "kind", "name"], name="unique_catalogue_entry"
            )
        ]

    def __str__(self) -> str:
        return f"{self.cluster} {self.kind} {self.name}"


class SyncIssue(models.Model):
    """An object of the cluster the last sync skipped (e.g. a value too long for a column)."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="sync_issues")
    kind = models.CharField(_("kind"), max_length=63)
    namespace = models.CharField(_("namespace"), max_length=253, blank=True)
    name = models.CharField(_("name"), max_length=253)
    problem = models.TextField(_("problem"))
    first_seen_at = models.DateTimeField(_("first seen"))

    class Meta:
        ordering = ["cluster", "kind", "namespace", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "kind", "namespace", "name"], name="unique_sync_issue"
            )
        ]
        verbose_name = _("skipped object")
        verbose_name_plural = _("skipped objects")

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}: {self.problem}"
