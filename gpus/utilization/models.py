"""GPU telemetry: devices by UUID, samples, rollups, metric sources and guest-agent tokens.

A sample carries its owner (tenant, workload) as the inventory showed it
when it was taken: a physical GPU (UUID) later serves another tenant.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class SourceKind(models.TextChoices):
    PROMETHEUS = "prometheus", _("Prometheus-compatible query API")
    DIRECT = "direct", _("DCGM exporters scraped directly")


class MetricSource(models.Model):
    """Where one cluster's GPU telemetry comes from, and how the last collection went. An empty
    kind means "as the settings say" (METRICS_SOURCE and friends)."""

    cluster = models.OneToOneField(
        "inventory.Cluster", on_delete=models.CASCADE, related_name="metric_source"
    )
    kind = models.CharField(_("kind"), max_length=16, choices=SourceKind.choices, blank=True)
    url = models.CharField(
        _("query API URL"),
        max_length=500,
        blank=True,
        help_text=_("Prometheus, VictoriaMetrics single or vmselect (…/select/0/prometheus)."),
    )
    sd_url = models.CharField(_("HTTP service-discovery URL"), max_length=500, blank=True)
    targets = models.TextField(
        _("exporter targets"), blank=True, help_text=_("One URL per line, when there is no SD URL.")
    )
    bearer_token = models.CharField(_("bearer token"), max_length=500, blank=True)
    username = models.CharField(_("user name"), max_length=200, blank=True)
    password = models.CharField(_("password"), max_length=200, blank=True)
    timeout_seconds = models.FloatField(_("timeout (s)"), default=10.0)
    last_collected_at = models.DateTimeField(_("last collection"), null=True, blank=True)
    last_seconds = models.FloatField(_("last collection duration (s)"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        verbose_name = _("metric source")
        verbose_name_plural = _("metric sources")

    def __str__(self) -> str:
        return f"{self.cluster}: {self.get_kind_display()}"


class GpuDevice(models.Model):
    """A physical GPU as telemetry names it (its UUID), with the owner seen last."""

    uuid = models.CharField(_("UUID"), max_length=80, unique=True)
    cluster = models.ForeignKey(
        "inventory.Cluster",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="devices",
    )
    model_name = models.CharField(_("model"), max_length=100, blank=True)
    gpu_model = models.ForeignKey(
        "catalog.GpuModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="devices"
    )
    hostname = models.CharField(_("node"), max_length=253, blank=True)
    index = models.PositiveSmallIntegerField(_("index"), null=True, blank=True)
    source = models.CharField(_("source"), max_length=20, blank=True)  # dcgm-exporter, agent
    tenant = models.ForeignKey(
        "tenancy.Tenant", on_delete=models.SET_NULL, null=True, blank=True, related_name="devices"
    )
    workload = models.ForeignKey(
        "inventory.GpuWorkload",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="devices",
    )
    kube_cluster = models.CharField(_("tenant cluster"), max_length=100, blank=True)
    pod = models.CharField(_("pod"), max_length=253, blank=True)
    power_limit_w = models.FloatField(_("power limit (W)"), null=True, blank=True)
    first_seen_at = models.DateTimeField(_("first seen"), auto_now_add=True)
    last_seen_at = models.DateTimeField(_("last seen"), null=True, blank=True)
    # Since when the GPU has been allocated and under the idle threshold (None: not idle).
    idle_since = models.DateTimeField(_("idle since"), null=True, blank=True)
    busy_metric = models.CharField(_("busy measured by"), max_length=40, blank=True)
    # The XID gauge as last read: DCGM_FI_DEV_XID_ERRORS holds the last XID until the driver
    # reloads (then 0), so an incident is a value that differs from this one.
    xid_value = models.IntegerField(_("last XID value"), null=True, blank=True)

    class Meta:
        ordering = ["hostname", "index"]
        indexes = [
            models.Index(fields=["tenant", "hostname"], name="gpudevice_tenant_idx"),
            # The idle page's order (idle_since, id): a page is the first rows of this index,
            # not a sort of every idle GPU.
            models.Index(fields=["idle_since", "id"], name="gpudevice_idle_key_idx"),
            # The fleet page's workloads without telemetry: "no GPU of this workload seen since"
            # is read in the index (an anti-join filtering every device row took 214 ms at
            # 1,000,000 GPUs, 4 ms with it).
            models.Index(fields=["workload", "last_seen_at"], name="gpudevice_workload_seen_idx"),
            # The fleet page asks which busy metrics are in use: one index probe each.
            models.Index(fields=["busy_metric"], name="gpudevice_busy_metric_idx"),
        ]
        verbose_name = _("GPU device")
        verbose_name_plural = _("GPU devices")

    def __str__(self) -> str:
        return f"{self.model_name} {self.uuid}"


class GpuSample(models.Model):
    """One reading of one GPU (direct scrape or guest agent). Empty fields: not reported."""

    device = models.ForeignKey(GpuDevice, on_delete=models.CASCADE, related_name="samples")
    ts = models.DateTimeField(_("time"))
    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.SET_NULL, null=True, blank=True)
    workload = models.ForeignKey(
        "inventory.GpuWorkload", on_delete=models.SET_NULL, null=True, blank=True
    )
    allocated = models.BooleanField(default=False)
    util = models.FloatField(null=True, blank=True)  # %
    busy = models.FloatField(null=True, blank=True)  # % by the best metric (see busy_metric)
    tensor = models.FloatField(null=True, blank=True)  # %
    mem_used = models.FloatField(null=True, blank=True)  # MiB
    mem_total = models.FloatField(null=True, blank=True)  # MiB
    power = models.FloatField(null=True, blank=True)  # W
    temp = models.FloatField(null=True, blank=True)  # C
    sm_clock = models.FloatField(null=True, blank=True)  # MHz
    mem_clock = models.FloatField(null=True, blank=True)  # MHz
    energy_mj = models.FloatField(null=True, blank=True)  # counter since boot
    xid = models.IntegerField(null=True, blank=True)
    throttle = models.BigIntegerField(null=True, blank=True)  # clock event reasons bitmask

    class Meta:
        indexes = [
            models.Index(fields=["device", "ts"], name="gpusample_device_ts_idx"),
            models.Index(fields=["ts"], name="gpusample_ts_idx"),
            models.Index(fields=["tenant", "ts"], name="gpusample_tenant_ts_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} at {self.ts}"


class XidEvent(models.Model):
    """An XID as it first appeared on a GPU in one driver boot (the gauge moved to it).

    DCGM_FI_DEV_XID_ERRORS is "the value of the last XID error encountered": it keeps that value
    until the driver reloads, so counting the buckets that show it would count one error for
    every 5 minutes until the next reboot."""

    device = models.ForeignKey(GpuDevice, on_delete=models.CASCADE, related_name="xid_events")
    ts = models.DateTimeField(_("first seen"))
    xid = models.IntegerField(_("XID"))
    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.SET_NULL, null=True, blank=True)
    workload = models.ForeignKey(
        "inventory.GpuWorkload", on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "ts", "xid"], name="unique_xid_event")
        ]
        indexes = [models.Index(fields=["ts"], name="xidevent_ts_idx")]

    def __str__(self) -> str:
        return f"XID {self.xid} on {self.device_id} at {self.ts}"


class Bucket(models.TextChoices):
    FIVE_MINUTES = "5m", _("5 minutes")
    HOUR = "1h", _("1 hour")


class GpuRollup(models.Model):
    """One GPU over one 5-minute or hourly bucket (ts = bucket start)."""

    bucket = models.CharField(max_length=2, choices=Bucket.choices)
    ts = models.DateTimeField()
    device = models.ForeignKey(GpuDevice, on_delete=models.CASCADE, related_name="rollups")
    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.SET_NULL, null=True, blank=True)
    workload = models.ForeignKey(
        "inventory.GpuWorkload", on_delete=models.SET_NULL, null=True, blank=True
    )
    samples = models.PositiveIntegerField(default=0)
    allocated = models.BooleanField(default=False)
    util_avg = models.FloatField(null=True)
    util_max = models.FloatField(null=True)
    util_min = models.FloatField(null=True)
    busy_avg = models.FloatField(null=True)
    tensor_avg = models.FloatField(null=True)
    mem_used_avg = models.FloatField(null=True)
    # The most memory used in the bucket (MiB): what right-sizing asks a smaller GPU to hold.
    mem_used_max = models.FloatField(null=True)
    mem_total = models.FloatField(null=True)
    power_avg = models.FloatField(null=True)
    power_max = models.FloatField(null=True)
    temp_avg = models.FloatField(null=True)
    temp_max = models.FloatField(null=True)
    sm_clock_avg = models.FloatField(null=True)
    energy_wh = models.FloatField(null=True)
    xid_last = models.IntegerField(null=True)  # last non-zero XID in the bucket
    throttle_any = models.BigIntegerField(null=True)  # OR of the bitmasks

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bucket", "device", "ts"], name="unique_gpu_rollup")
        ]
        indexes = [
            models.Index(fields=["bucket", "ts"], name="gpurollup_bucket_ts_idx"),
            models.Index(fields=["bucket", "tenant", "ts"], name="gpurollup_tenant_ts_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.bucket} {self.ts}"


class Scope(models.TextChoices):
    FLEET = "fleet", _("Fleet")
    CLUSTER = "cluster", _("Cluster")
    MODEL = "model", _("Model")
    TENANT = "tenant", _("Tenant")
    # Per node and per workload (VM or node group): the heatmap and the tenant page read these,
    # so query-API mode needs no per-GPU rows.
    NODE = "node", _("Node")
    WORKLOAD = "workload", _("Workload")
    # The physical host node whose GPUs a tenant worker or VM holds (the inventory's holders).
    HOST = "host", _("Host node")


class GroupRollup(models.Model):
    """A group of GPUs (fleet, cluster, model, tenant, node, workload) over one bucket: what
    fleet charts read."""

    bucket = models.CharField(max_length=2, choices=Bucket.choices)
    scope = models.CharField(max_length=8, choices=Scope.choices)
    # cluster name, model name, tenant namespace, hostname, "<tenant>|<workload>", or "".
    key = models.CharField(max_length=200)
    ts = models.DateTimeField()
    # ts as epoch seconds: charts read tens of thousands of rows, without datetime conversion.
    epoch = models.BigIntegerField(default=0)
    gpus = models.PositiveIntegerField(default=0)  # GPUs reporting
    allocated = models.FloatField(default=0)  # mean count over the bucket
    busy = models.FloatField(default=0)  # mean count over the threshold
    util_avg = models.FloatField(null=True)
    util_p95 = models.FloatField(null=True)
    util_p05 = models.FloatField(null=True)
    # The group's mean busy % (each GPU's best busy metric, else its utilization) and the most
    # memory one of its GPUs used (MiB, DCGM_FI_DEV_FB_USED): right-sizing reads these where
    # per-GPU rows are not kept (query-API mode), with the per-GPU rows' meaning and units.
    busy_avg = models.FloatField(null=True)
    mem_used_max = models.FloatField(null=True)
    power_sum = models.FloatField(null=True)
    power_limit_sum = models.FloatField(null=True)
    energy_wh = models.FloatField(null=True)
    gpu_hours = models.FloatField(default=0)  # allocated GPU-hours

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket", "scope", "key", "ts"], name="unique_group_rollup"
            )
        ]
        indexes = [
            models.Index(fields=["bucket", "scope", "key", "epoch"], name="grouprollup_epoch_idx"),
            # The heatmap ranks the nodes of one bucket by utilization: a walk of this index.
            models.Index(
                fields=["bucket", "scope", "epoch", "util_avg"], name="grouprollup_rank_idx"
            ),
            # The energy page ranks the groups of one bucket by energy the same way.
            models.Index(
                fields=["bucket", "scope", "epoch", "energy_wh"], name="grouprollup_energy_rank_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key} {self.bucket} {self.ts}"


class AgentToken(models.Model):
    """A guest agent's credential for one GPU VM: only its SHA-256 is kept."""

    workload = models.ForeignKey(
        "inventory.GpuWorkload", on_delete=models.CASCADE, related_name="agent_tokens"
    )
    prefix = models.CharField(max_length=12, unique=True)  # identifies the token in lists
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("guest-agent token")
        verbose_name_plural = _("guest-agent tokens")

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.workload})"
