"""Django admin for the GPU catalog."""

from __future__ import annotations

from django.contrib import admin

from gpus.catalog.models import GpuModel


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
