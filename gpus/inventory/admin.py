"""Django admin for the snapshot: read-only, since each sync replaces it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from gpus.inventory.models import (
    Cluster,
    GpuWorkload,
    ModelInventory,
    Node,
    NodeGpu,
    SyncIssue,
    TenantAllocation,
)


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
