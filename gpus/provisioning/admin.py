"""Django admin for operations, audit events and quotas."""

from __future__ import annotations

from django.contrib import admin

from gpus.provisioning.models import AuditEvent, GpuQuota, Operation


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
