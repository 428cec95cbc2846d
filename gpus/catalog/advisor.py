"""The "which GPU and which way?" helper: the Hikube GPU overview's guidance, as rules.

Pure: takes the catalog rows, returns a recommendation. The reasons quote the overview's use cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from gpus.catalog.choices import Approach, GpuUse, Workload
from gpus.catalog.models import GpuModel
from gpus.catalog.sizing import recommended_instance_type, served_instance_type


@dataclass(frozen=True)
class Rule:
    uses: tuple[str, ...]  # the catalog uses that point to the model, best first
    approach: Approach
    model_reason: Promise
    approach_reason: Promise


RULES: dict[str, Rule] = {
    Workload.INFERENCE: Rule(
        (GpuUse.INFERENCE, GpuUse.GENERATIVE_AI),
        Approach.KUBERNETES,
        _("Hikube positions the L40S for generative AI and inference."),
        _(
            "Containerized AI/ML serving gains automatic scaling on Kubernetes workers (each "
            "pod gets whole GPUs: no sharing)."
        ),
    ),
    Workload.TRAINING: Rule(
        (GpuUse.ML_TRAINING, GpuUse.HPC),
        Approach.KUBERNETES,
        _("Hikube positions the A100 for ML training and high-performance computing."),
        _("Training jobs run in parallel are best orchestrated by Kubernetes."),
    ),
    Workload.LLM: Rule(
        (GpuUse.LLM, GpuUse.TRANSFORMERS),
        Approach.KUBERNETES,
        _("Hikube positions the H100 for LLMs, transformers and exascale computing."),
        _("Distributed LLM jobs need Kubernetes' horizontal scaling and orchestration."),
    ),
    Workload.RENDERING: Rule(
        (GpuUse.RENDERING,),
        Approach.VM,
        _("Hikube positions the L40S for real-time rendering."),
        _("Graphics applications (rendering, CAD) want complete, exclusive control of the GPU."),
    ),
    Workload.LEGACY: Rule(
        (GpuUse.INFERENCE, GpuUse.GENERATIVE_AI),
        Approach.VM,
        _("The L40S is the general-purpose starting point of Hikube's range."),
        _(
            "Legacy or specialized workloads run unchanged in a VM with the GPU passed "
            "through (you install the NVIDIA driver yourself)."
        ),
    ),
    Workload.DEVELOPMENT: Rule(
        (GpuUse.INFERENCE, GpuUse.GENERATIVE_AI),
        Approach.VM,
        _("The L40S is the general-purpose starting point of Hikube's range."),
        _("An isolated development environment is what a GPU VM gives: one GPU, all yours."),
    ),
}

# Hikube's FAQ: plan 8 to 16 vCPU per GPU; u1.2xlarge for one GPU.
RECOMMENDED_INSTANCE_TYPE = recommended_instance_type(1)


@dataclass(frozen=True)
class Recommendation:
    workload: str
    model: GpuModel | None
    model_reason: Promise
    approach: Approach
    approach_reason: Promise
    instance_type: str = RECOMMENDED_INSTANCE_TYPE


def recommend(
    workload: str, models: Iterable[GpuModel], served: Mapping[str, int] | None = None
) -> Recommendation:
    """The rule for the workload; the size among the instance types the cluster serves (name ->
    vCPU), the FAQ's when none are known."""
    rule = RULES[workload]
    candidates = [m for m in models if m.offered]
    chosen = None
    for use in rule.uses:
        chosen = next((m for m in candidates if use in m.uses), None)
        if chosen:
            break
    return Recommendation(
        workload=workload,
        model=chosen,
        model_reason=rule.model_reason,
        approach=rule.approach,
        approach_reason=rule.approach_reason,
        instance_type=served_instance_type(1, served or {}),
    )
