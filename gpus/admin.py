from django.contrib import admin

from .models import GpuModel, Membership, SyncIssue, Tenant


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


@admin.register(SyncIssue)
class SyncIssueAdmin(admin.ModelAdmin):
    """Read-only: the sync writes these rows, admins read them."""

    list_display = ["cluster", "kind", "namespace", "name", "problem", "first_seen_at"]
    list_filter = ["cluster", "kind"]
    search_fields = ["namespace", "name"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
