"""Capacity over time (append-only samples at each sync, hourly and daily rollups), per-tenant
GPU-hours, unmet demand, the waitlist and notifications."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from gpus.catalog.models import GpuModel
from gpus.inventory.models import Cluster
from gpus.tenancy.models import Tenant


class CapacitySample(models.Model):
    """One cluster and GPU model at one sync: written once per model per sync, never updated."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="+")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField(_("at"))
    installed = models.PositiveIntegerField(default=0)
    allocated = models.PositiveIntegerField(default=0)  # held by pods, as the nodes report
    allocated_vms = models.PositiveIntegerField(default=0)
    allocated_node_groups = models.PositiveIntegerField(default=0)
    free = models.PositiveIntegerField(default=0)
    free_max_one = models.PositiveIntegerField(default=0)  # the most free on one server
    unavailable = models.PositiveIntegerField(default=0)
    queued = models.PositiveIntegerField(default=0)  # GPUs of operations waiting for capacity
    refused = models.PositiveIntegerField(default=0)  # GPUs refused since the previous sample
    # How busy the allocated GPUs are, from the latest 5-minute utilization rollups at this
    # sync: how many report telemetry (passthrough VMs have none) and their mean busy %.
    reporting = models.PositiveIntegerField(default=0)
    busy_pct = models.FloatField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["at"], name="capsample_at_idx"),
            models.Index(fields=["cluster", "at"], name="capsample_cluster_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.gpu_model_id}@{self.cluster_id} {self.at}"


class Bucket(models.TextChoices):
    HOUR = "1h", _("hour")
    DAY = "1d", _("day")


class CapacityRollup(models.Model):
    """One cluster and GPU model over an hour or a day (ts = bucket start, UTC)."""

    bucket = models.CharField(max_length=2, choices=Bucket.choices)
    ts = models.DateTimeField()
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="+")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.CASCADE, related_name="+")
    samples = models.PositiveIntegerField(default=0)
    installed = models.FloatField(default=0)  # means over the bucket
    allocated = models.FloatField(default=0)
    allocated_max = models.PositiveIntegerField(default=0)
    free = models.FloatField(default=0)
    free_min = models.PositiveIntegerField(default=0)
    unavailable = models.FloatField(default=0)
    queued_max = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)  # GPUs refused in the bucket

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket", "cluster", "gpu_model", "ts"], name="unique_capacity_rollup"
            )
        ]
        indexes = [models.Index(fields=["bucket", "ts"], name="caprollup_bucket_ts_idx")]

    def __str__(self) -> str:
        return f"{self.gpu_model_id}@{self.cluster_id} {self.bucket} {self.ts}"


class TenantUsage(models.Model):
    """GPUs one tenant held of one model in one cluster over an hour or a day: the most at any
    sync, and GPU-hours (held x time between syncs)."""

    bucket = models.CharField(max_length=2, choices=Bucket.choices)
    ts = models.DateTimeField()
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="+")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.CASCADE, related_name="+")
    gpus_max = models.PositiveIntegerField(default=0)
    gpu_hours = models.FloatField(default=0)
    # What the workloads holding those GPUs hold besides (instance type and disk), x time: what
    # spend prices besides the GPUs (capacity.pricing).
    vcpu_hours = models.FloatField(default=0)
    memory_gib_hours = models.FloatField(default=0)
    disk_gib_hours = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket", "cluster", "tenant", "gpu_model", "ts"],
                name="unique_tenant_usage",
            )
        ]
        indexes = [
            models.Index(fields=["bucket", "ts"], name="tenantusage_bucket_ts_idx"),
            models.Index(fields=["tenant", "bucket", "ts"], name="tenantusage_tenant_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.gpu_model_id} {self.bucket} {self.ts}"


class RefusedRequest(models.Model):
    """A request refused at submit for lack of capacity (no operation was saved): unmet demand."""

    at = models.DateTimeField(_("at"), auto_now_add=True)
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="+")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.CASCADE, related_name="+")
    gpus = models.PositiveIntegerField(_("GPUs"))
    actor_name = models.CharField(_("requested by"), max_length=150)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["at"], name="refused_at_idx")]
        verbose_name = _("refused request")
        verbose_name_plural = _("refused requests")

    def __str__(self) -> str:
        return f"{self.actor_name}: {self.gpus} x {self.gpu_model_id} at {self.at}"


class WaitlistEntry(models.Model):
    """A tenant's wish to be told when GPUs free up; deleted once it fires or expires."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.CASCADE, related_name="+")
    count = models.PositiveIntegerField(_("GPUs"))
    # For a VM: all its GPUs must be free on one server.
    one_server = models.BooleanField(_("on one server (for a VM)"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(_("until"))
    # The language the wish was made in: the sync that fires it tells the person in it.
    language = models.CharField(max_length=12, blank=True, default="")

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = _("waitlist entry")
        verbose_name_plural = _("waitlist entries")

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.count} x {self.gpu_model_id}"


class NotificationKind(models.TextChoices):
    GPUS_FREE = "gpus_free", _("GPUs free")
    OPERATION_DONE = "operation_done", _("Operation done")
    OPERATION_FAILED = "operation_failed", _("Operation failed")


class Notification(models.Model):
    """Shown in the page to one person until read; emailed once when email is configured."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=NotificationKind.choices)
    text = models.TextField(_("text"))
    link = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_unread_idx")]
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")

    def __str__(self) -> str:
        return self.text[:60]


class Currency(models.TextChoices):
    CHF = "CHF", "CHF"
    EUR = "EUR", "EUR"


class PriceList(models.Model):
    """The prices in force from `valid_from` (a UTC day) until a later list's. Never changed
    once saved: a change is a new list (who set it, when), so spend already counted keeps its
    prices and the lists are their own audit trail. Read through capacity.pricing only."""

    valid_from = models.DateField(_("valid from"))
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices)
    vcpu_hour = models.DecimalField(_("per vCPU-hour"), max_digits=12, decimal_places=6)
    memory_gib_hour = models.DecimalField(
        _("per GiB of memory-hour"), max_digits=12, decimal_places=6
    )
    disk_gib_month = models.DecimalField(
        _("per GiB of disk-month"), max_digits=12, decimal_places=6
    )
    set_by = models.CharField(_("set by"), max_length=150)
    created_at = models.DateTimeField(_("saved"), auto_now_add=True)

    class Meta:
        ordering = ["-valid_from", "-pk"]
        verbose_name = _("price list")
        verbose_name_plural = _("price lists")

    def __str__(self) -> str:
        return f"{self.currency} from {self.valid_from}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise ValueError("Price lists are append-only: save a new one.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class GpuPrice(models.Model):
    """One GPU model's price per GPU-hour in one list (a model without a row has no price)."""

    price_list = models.ForeignKey(PriceList, on_delete=models.CASCADE, related_name="gpu_prices")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.PROTECT, related_name="+")
    hour = models.DecimalField(_("per GPU-hour"), max_digits=12, decimal_places=4)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["price_list", "gpu_model"], name="unique_gpu_price")
        ]

    def __str__(self) -> str:
        return f"{self.gpu_model_id}: {self.hour}"


# The counts a rollup keeps: written by history, read by the page and the exports.
ROLLUP_FIELDS = [
    "samples",
    "installed",
    "allocated",
    "allocated_max",
    "free",
    "free_min",
    "unavailable",
    "queued_max",
    "refused",
]
