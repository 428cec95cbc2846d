"""Django admin for metric sources and guest-agent tokens."""

from __future__ import annotations

from django.contrib import admin

from gpus.utilization.models import AgentToken, MetricSource


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
