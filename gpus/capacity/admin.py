"""Django admin for what people asked of capacity: waitlist wishes, notifications, refusals.
The history is read on /capacity/ (and its exports), not edited."""

from __future__ import annotations

from django.contrib import admin

from gpus.capacity.models import Notification, RefusedRequest, WaitlistEntry


@admin.register(WaitlistEntry)
class WaitlistEntryAdmin(admin.ModelAdmin):
    list_display = ("tenant", "user", "gpu_model", "count", "one_server", "expires_at")
    list_select_related = ("tenant", "user", "gpu_model")
    raw_id_fields = ("tenant", "user")


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "tenant", "kind", "text", "read_at")
    list_select_related = ("user", "tenant")
    raw_id_fields = ("user", "tenant")


@admin.register(RefusedRequest)
class RefusedRequestAdmin(admin.ModelAdmin):
    list_display = ("at", "tenant", "cluster", "gpu_model", "gpus", "actor_name")
    list_select_related = ("tenant", "cluster", "gpu_model")
    readonly_fields = ("at", "tenant", "cluster", "gpu_model", "gpus", "actor_name")
