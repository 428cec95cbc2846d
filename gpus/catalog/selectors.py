"""Reads of the GPU catalog."""

from __future__ import annotations

from django.db.models import QuerySet

from gpus.catalog.models import GpuModel


def catalog_models() -> QuerySet[GpuModel]:
    return GpuModel.objects.all()


def offered_models() -> QuerySet[GpuModel]:
    return GpuModel.objects.filter(offered=True)
