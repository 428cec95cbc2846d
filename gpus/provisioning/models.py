"""The portal's own record of what people asked for: operations, the audit log, quotas."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F
from django.db.models.functions import Upper
from django.utils.translation import gettext_lazy as _

from gpus.catalog.models import GpuModel
from gpus.inventory.models import Cluster
from gpus.provisioning.choices import (
    ACTIVE_OPERATION_STATES,
    ALREADY_DONE,
    TERMINAL_OPERATION_STATES,
    OperationKind,
    OperationState,
)
from gpus.tenancy.models import Tenant

# --- operations: the portal's own record of what people asked for -------------------


class Operation(models.Model):
    """One change a person asked for, kept apart from the snapshot (DESIGN rule 8).

    The target is stored by value (cluster, namespace, app kind, name, node group) so the
    record survives the object's disappearance and the inventory sync never touches it.
    """

    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="operations")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="operations")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="operations"
    )
    actor_name = models.CharField(_("requested by"), max_length=150)
    # Who the cluster sees acting, fixed at submit time: the prefixed user and the person's
    # tenant groups (blank for rows recorded before impersonation carried the person's rights).
    cluster_user = models.CharField(_("cluster user"), max_length=200, blank=True)
    cluster_groups = models.JSONField(_("cluster groups"), default=list, blank=True)
    kind = models.CharField(_("operation"), max_length=16, choices=OperationKind.choices)
    # The target, by value.
    namespace = models.CharField(_("namespace"), max_length=63)
    app_kind = models.CharField(_("Cozystack kind"), max_length=40)
    name = models.CharField(_("name"), max_length=63)
    node_group = models.CharField(_("node group"), max_length=63, blank=True)
    # What it holds once done, for quotas and fit checks.
    gpu_model = models.ForeignKey(
        GpuModel, on_delete=models.PROTECT, null=True, blank=True, related_name="operations"
    )
    gpu_count = models.PositiveIntegerField(_("GPUs"), default=0)
    queue_until_capacity = models.BooleanField(_("queue until capacity frees"), default=False)
    params = models.JSONField(_("form input"), default=dict, blank=True)
    manifests = models.JSONField(_("desired manifests"), default=list)
    state = models.CharField(
        _("state"), max_length=16, choices=OperationState.choices, default=OperationState.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    # The cluster's own words (reason/message) and causes; shown raw one click away.
    error = models.TextField(_("error"), blank=True)
    reason = models.CharField(_("reason"), max_length=200, blank=True)
    message = models.TextField(_("message"), blank=True)
    causes = models.JSONField(_("causes"), default=list, blank=True)
    observed = models.JSONField(_("last observed"), default=dict, blank=True)
    baseline = models.JSONField(_("before the apply"), default=dict, blank=True)
    created_at = models.DateTimeField(_("submitted"), auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(_("applied"), null=True, blank=True)
    disk_ready_at = models.DateTimeField(_("disk ready"), null=True, blank=True)
    scheduled_at = models.DateTimeField(_("scheduled"), null=True, blank=True)
    running_at = models.DateTimeField(_("running"), null=True, blank=True)
    unschedulable_since = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    # Not a column: set by services.record once its commit sent the apply task (True) or found
    # the broker down (False: recorded all the same, the reconciler sends it later).
    queued: bool | None = None

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # At most one active operation per target.
            models.UniqueConstraint(
                fields=["cluster", "namespace", "app_kind", "name", "node_group"],
                condition=models.Q(state__in=sorted(str(s) for s in ACTIVE_OPERATION_STATES)),
                name="one_active_operation_per_target",
            )
        ]
        indexes = [
            models.Index(fields=["state", "updated_at"], name="operation_state_idx"),
            # A tenant's operations page by page: keyset (created_at, id) within the tenant.
            models.Index(fields=["tenant", "-created_at", "-id"], name="operation_tenant_page_idx"),
            # The fleet-wide operations list, newest first, narrowed by a rare kind (a delete
            # among creates): read from its own index in id order instead of walking the whole
            # fleet's key (50,000 operations, 5 deletes: 22 ms -> 0.14 ms). A state or a model
            # is read from the state and foreign-key indexes already there.
            models.Index(fields=["kind", "-id"], name="operation_kind_id_idx"),
            # The capacity page's requests that failed after waiting unschedulable, newest
            # first: read from the range's end instead of sorting every failed operation.
            models.Index(
                fields=["-finished_at"],
                condition=models.Q(
                    state="failed", unschedulable_since__isnull=False, gpu_model__isnull=False
                ),
                name="operation_unschedulable_idx",
            ),
            # ... and by dates alone, keyed by (created_at, id): "until 300 days ago" reads
            # from the range's end (63 ms -> 0.2 ms) instead of sorting every older operation.
            models.Index(fields=["-created_at", "-id"], name="operation_created_idx"),
        ]
        verbose_name = _("operation")
        verbose_name_plural = _("operations")

    def __str__(self) -> str:
        target = f"{self.name}/{self.node_group}" if self.node_group else self.name
        return f"{self.get_kind_display()} {self.app_kind} {self.namespace}/{target}"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_OPERATION_STATES

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_OPERATION_STATES

    @property
    def was_already_true(self) -> bool:
        """A start or stop that found the VM as asked: it changed nothing."""
        return self.state == OperationState.SUCCEEDED and self.reason == ALREADY_DONE

    @property
    def language(self) -> str:
        """The language of the request that asked for it: what the worker writes about it
        later (its end's notification) is in the asker's words, not the worker's default."""
        return str(self.params.get("language") or settings.LANGUAGE_CODE)


class AuditEvent(models.Model):
    """Append-only: who asked for what, when, and what became of it."""

    operation = models.ForeignKey(
        Operation, on_delete=models.PROTECT, null=True, blank=True, related_name="events"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="audit_events")
    actor_name = models.CharField(_("actor"), max_length=150)
    action = models.CharField(_("action"), max_length=40)
    target = models.CharField(_("target"), max_length=300)
    detail = models.JSONField(_("detail"), default=dict, blank=True)
    created_at = models.DateTimeField(_("at"), auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [
            # The audit log page by page, newest first (keyset on (created_at, id)), whole or
            # for one tenant.
            models.Index(fields=["-created_at", "-id"], name="auditevent_created_idx"),
            models.Index(fields=["tenant", "-created_at", "-id"], name="auditevent_tenant_idx"),
            # One actor's events (the filter's case-insensitive match), in the same order.
            models.Index(
                Upper("actor_name"),
                F("created_at").desc(),
                F("id").desc(),
                name="auditevent_actor_idx",
            ),
        ]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.target}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise ValueError("Audit events are append-only.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise ValueError("Audit events are append-only.")


class GpuQuota(models.Model):
    """How many GPUs of one model a tenant may hold; no row means unlimited."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="gpu_quotas")
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.CASCADE, related_name="quotas")
    limit = models.PositiveIntegerField(_("GPU limit"))

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "gpu_model"], name="unique_gpu_quota")
        ]
        verbose_name = _("GPU quota")
        verbose_name_plural = _("GPU quotas")

    def __str__(self) -> str:
        return f"{self.tenant}: {self.limit} x {self.gpu_model}"
