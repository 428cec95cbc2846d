from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .models import (
    AgentToken,
    AuditEvent,
    Cluster,
    GpuModel,
    GpuQuota,
    GpuWorkload,
    Membership,
    MetricSource,
    ModelInventory,
    Node,
    NodeGpu,
    Operation,
    SyncIssue,
    Tenant,
    TenantAllocation,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["namespace", "display_name", "created_at"]
    search_fields = ["namespace", "display_name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__username", "tenant__namespace"]
    autocomplete_fields = ["user", "tenant"]


@admin.register(GpuModel)
class GpuModelAdmin(admin.ModelAdmin):
    list_display = [
        "display_name",
        "resource_name",
        "architecture",
        "memory_gb",
        "offered",
        "is_known",
    ]
    list_filter = ["offered", "is_known", "architecture"]
    search_fields = ["display_name", "resource_name"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """The snapshot the inventory sync writes: shown, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Cluster)
class ClusterAdmin(ReadOnlyAdmin):
    """Each cluster's sync history: last attempt, last success, duration, last error."""

    list_display = [
        "name",
        "last_synced_at",
        "last_attempt_at",
        "last_sync_seconds",
        "unreachable_since",
        "last_error_kind",
        "short_error",
    ]
    list_filter = ["last_error_kind"]
    search_fields = ["name"]

    @admin.display(description=_("last sync error"))
    def short_error(self, obj: Cluster) -> str:
        """The plain sentence in the admin's language, then the raw detail (cut short)."""
        if not obj.last_error:
            return ""
        return f"{obj.error_sentence} ({obj.last_error[:120]})"


@admin.register(SyncIssue)
class SyncIssueAdmin(ReadOnlyAdmin):
    """Objects the sync could not store (too long for a column, unparseable), per cluster."""

    list_display = ["cluster", "kind", "namespace", "name", "problem", "first_seen_at"]
    list_filter = ["cluster", "kind"]
    search_fields = ["namespace", "name"]


class NodeGpuInline(admin.TabularInline):
    model = NodeGpu
    fields = ["gpu_model", "installed", "allocated", "free"]
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    list_display = ["name", "cluster", "health", "gpu_installed", "gpu_allocated", "gpu_free"]
    list_filter = ["health", "cluster"]
    search_fields = ["name"]
    list_select_related = ["cluster"]
    inlines = [NodeGpuInline]


@admin.register(GpuWorkload)
class GpuWorkloadAdmin(ReadOnlyAdmin):
    list_display = ["name", "node_group", "tenant", "kind", "gpu_model", "gpus_held", "state"]
    list_filter = ["kind", "state", "cluster"]
    search_fields = ["name", "tenant__namespace"]
    list_select_related = ["tenant", "gpu_model"]


@admin.register(ModelInventory)
class ModelInventoryAdmin(ReadOnlyAdmin):
    list_display = ["gpu_model", "cluster", "installed", "allocated", "free", "unavailable"]
    list_select_related = ["gpu_model", "cluster"]


@admin.register(TenantAllocation)
class TenantAllocationAdmin(ReadOnlyAdmin):
    list_display = ["namespace", "tenant", "gpu_model", "allocated", "cluster"]
    search_fields = ["namespace"]
    list_select_related = ["tenant", "gpu_model", "cluster"]


@admin.register(GpuQuota)
class GpuQuotaAdmin(admin.ModelAdmin):
    list_display = ["tenant", "gpu_model", "limit"]
    list_filter = ["tenant", "gpu_model"]
    autocomplete_fields = ["tenant", "gpu_model"]


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "kind", "app_kind", "namespace", "name", "state", "actor_name"]
    list_filter = ["state", "kind", "app_kind"]
    search_fields = ["name", "namespace", "actor_name"]
    readonly_fields = [f.name for f in Operation._meta.fields]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # operations are made by the portal's services only


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_name", "action", "target"]
    list_filter = ["action"]
    search_fields = ["target", "actor_name"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(MetricSource)
class MetricSourceAdmin(admin.ModelAdmin):
    """Where each cluster's GPU telemetry comes from (empty kind: as the settings say)."""

    list_display = ("cluster", "kind", "url", "sd_url", "last_collected_at", "last_error")
    readonly_fields = ("last_collected_at", "last_seconds", "last_error")


@admin.register(AgentToken)
class AgentTokenAdmin(admin.ModelAdmin):
    """Guest-agent tokens: only a prefix and the hash are kept; revoke by setting revoked_at."""

    list_display = ("prefix", "workload", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "workload", "created_at", "last_used_at")
