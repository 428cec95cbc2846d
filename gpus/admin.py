from django.contrib import admin

from .models import GpuModel, Membership, Tenant


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
