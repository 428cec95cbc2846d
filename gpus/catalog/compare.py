"""Side-by-side comparison of GPU models, and the seed's VM vs Kubernetes table. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from gpus.catalog.models import GpuModel


@dataclass(frozen=True)
class Cell:
    value: object
    best: bool = False


@dataclass(frozen=True)
class Row:
    label: Promise
    cells: list[Cell]
    numeric: bool = False
    unit: str | Promise = ""


NUMERIC_ROWS: list[tuple[str, Promise, str]] = [
    ("memory_gb", _("Memory"), pgettext_lazy("gigabytes", "GB")),  # French: Go
    ("int8_tops", _("INT8"), "TOPS"),
    ("fp32_tflops", _("FP32"), "TFLOPS"),
    ("tensor_tflops", _("Tensor"), "TFLOPS"),
]


def _numeric_row(
    models: Sequence[GpuModel], field: str, label: Promise, unit: str | Promise
) -> Row:
    values: list[Decimal | None] = [getattr(m, field) for m in models]
    present = [v for v in values if v is not None]
    # "Best" only means something when at least two models document the figure.
    best = max(present) if len(present) >= 2 else None
    cells = [Cell(v, best is not None and v == best) for v in values]
    return Row(label, cells, numeric=True, unit=unit)


def compare_rows(models: Sequence[GpuModel]) -> list[Row]:
    rows = [
        Row(_("Architecture"), [Cell(m.architecture) for m in models]),
        Row(_("Memory type"), [Cell(m.memory_type) for m in models]),
    ]
    rows += [_numeric_row(models, field, label, unit) for field, label, unit in NUMERIC_ROWS]
    rows.append(Row(_("Typical use"), [Cell(", ".join(m.use_labels())) for m in models]))
    return rows


# The Hikube GPU overview's "comparison of approaches", plus its use cases.
APPROACH_ROWS: list[tuple[Promise, Promise, Promise]] = [
    (_("Isolation"), _("Complete (1 GPU = 1 VM)"), _("Shared (orchestrated)")),
    (_("Performance"), _("Native (passthrough)"), _("Native (device plugin)")),
    (_("Management"), _("Manual"), _("Automated")),
    (_("Scaling"), _("Vertical only"), _("Horizontal + vertical")),
    # Hikube's page says "Yes (between pods)"; on Cozystack v1.1 the GPU operator runs with no
    # time-slicing config (devicePlugin.config empty) and MIG "all-disabled"
    # (packages/system/gpu-operator/charts/gpu-operator/values.yaml, v25.3.0): whole GPUs only.
    (_("Sharing"), _("No"), _("No: a pod gets whole GPUs")),
    (_("Complexity"), _("Simple"), _("Complex")),
    (
        _("Use cases"),
        _(
            "Applications needing complete GPU control; legacy or specialized workloads; "
            "isolated development environments; graphics applications (rendering, CAD)"
        ),
        _(
            "Containerized AI/ML workloads; automatic scaling of GPU applications; complex "
            "orchestration of parallel jobs"
        ),
    ),
]
