from django.contrib import admin

from .models import AgentToken, GpuModel, Membership, MetricSource, Tenant


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
