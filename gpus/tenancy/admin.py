"""Django admin for tenants and memberships."""

from __future__ import annotations

from django.contrib import admin

from gpus.tenancy.models import Membership, Tenant


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
