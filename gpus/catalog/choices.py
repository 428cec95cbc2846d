"""The catalog's enumerations: typical uses, the two ways to rent a GPU, workloads."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class GpuUse(models.TextChoices):
    """Typical uses, as the Hikube GPU overview words them."""

    GENERATIVE_AI = "generative_ai", _("Generative AI")
    INFERENCE = "inference", _("Inference")
    RENDERING = "rendering", _("Real-time rendering")
    ML_TRAINING = "ml_training", _("ML training")
    HPC = "hpc", _("High-performance computing")
    LLM = "llm", _("Large language models")
    TRANSFORMERS = "transformers", _("Transformers")
    EXASCALE = "exascale", _("Exascale computing")


class Approach(models.TextChoices):
    """The two ways Hikube rents a GPU."""

    VM = "vm", _("GPU virtual machine")
    KUBERNETES = "kubernetes", _("Kubernetes worker nodes with GPUs")


class Workload(models.TextChoices):
    """What the "which GPU and which way?" helper asks about."""

    INFERENCE = "inference", _("Inference or generative AI serving")
    TRAINING = "training", _("Machine-learning training or fine-tuning")
    LLM = "llm", _("Large language models (training or serving)")
    RENDERING = "rendering", _("Rendering, CAD or other graphics")
    LEGACY = "legacy", _("A legacy or specialized application")
    DEVELOPMENT = "development", _("An isolated CUDA development environment")
