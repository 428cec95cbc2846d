"""Seed the GPU catalog: Hikube's three models with the figures its GPU overview documents, word for
word, plus the other resource names of Cozystack's default passthrough list (no figures invented)."""

import re
from decimal import Decimal

from django.db import migrations

# French typography: a non-breaking space before ":" ";" "?" "!" (a narrow screen must not break
# the line before the colon).
BEFORE_PUNCTUATION = re.compile(r"[ \u00a0]*([:;?!])(?=\s|$)")


def french_spaces(notes: dict[str, str]) -> dict[str, str]:
    if "fr" not in notes:
        return notes
    return {**notes, "fr": BEFORE_PUNCTUATION.sub("\u00a0\\1", notes["fr"])}

H100_NOTES = {
    "en": (
        "The identifier says 94 GB while Hikube documents 80 GB of HBM3; the 94 GB part is the "
        "H100 NVL (PCI 10DE:2321, named nvidia.com/GH100_H100L_94GB in Cozystack's defaults). "
        "The INT8 and Tensor figures appear to mix dense/sparse and precision conventions: check "
        "NVIDIA's datasheet."
    ),
    "fr": (
        "L'identifiant indique 94 Go alors que Hikube documente 80 Go de HBM3 ; la version 94 Go est "
        "la H100 NVL (PCI 10DE:2321, nommée nvidia.com/GH100_H100L_94GB dans les valeurs par défaut "
        "de Cozystack). Les chiffres INT8 et Tensor semblent mélanger les conventions dense/creuse et "
        "de précision : vérifiez la fiche technique NVIDIA."
    ),
    "de": (
        "Die Kennung nennt 94 GB, Hikube dokumentiert jedoch 80 GB HBM3; die 94-GB-Variante ist die "
        "H100 NVL (PCI 10DE:2321, in den Cozystack-Vorgaben nvidia.com/GH100_H100L_94GB). Die INT8- "
        "und Tensor-Werte scheinen Dense/Sparse- und Präzisionskonventionen zu mischen: prüfen Sie "
        "das NVIDIA-Datenblatt."
    ),
}
L40S_NOTES = {
    "en": (
        "Inside a VM, nvidia-smi reports 46068 MiB in total. The 362 TOPS INT8 figure matches "
        "NVIDIA's dense FP16 tensor figure (362 TFLOPS); resellers quote about 733 TOPS dense INT8: "
        "check NVIDIA's datasheet."
    ),
    "fr": (
        "Dans une VM, nvidia-smi affiche 46068 Mio au total. Le chiffre de 362 TOPS INT8 correspond "
        "au chiffre NVIDIA du tensor FP16 dense (362 TFLOPS) ; les revendeurs citent environ 733 TOPS "
        "INT8 dense : vérifiez la fiche technique NVIDIA."
    ),
    "de": (
        "In einer VM meldet nvidia-smi insgesamt 46068 MiB. Der Wert 362 TOPS INT8 entspricht "
        "NVIDIAs Dense-FP16-Tensor-Wert (362 TFLOPS); Händler nennen etwa 733 TOPS Dense-INT8: "
        "prüfen Sie das NVIDIA-Datenblatt."
    ),
}
A100_NOTES = {
    "en": (
        "The INT8 and Tensor figures appear to mix dense/sparse and precision conventions: check "
        "NVIDIA's datasheet."
    ),
    "fr": (
        "Les chiffres INT8 et Tensor semblent mélanger les conventions dense/creuse et de précision : "
        "vérifiez la fiche technique NVIDIA."
    ),
    "de": (
        "Die INT8- und Tensor-Werte scheinen Dense/Sparse- und Präzisionskonventionen zu mischen: "
        "prüfen Sie das NVIDIA-Datenblatt."
    ),
}

OFFERED = [
    {
        "resource_name": "nvidia.com/AD102GL_L40S",
        "display_name": "NVIDIA L40S",
        "architecture": "Ada Lovelace",
        "memory_gb": Decimal("48"),
        "memory_type": "GDDR6 ECC",
        "int8_tops": Decimal("362"),
        "fp32_tflops": Decimal("91.6"),
        "tensor_tflops": None,
        "uses": ["generative_ai", "inference", "rendering"],
        "notes": L40S_NOTES,
        "sort_order": 10,
    },
    {
        "resource_name": "nvidia.com/GA100_A100_PCIE_80GB",
        "display_name": "NVIDIA A100",
        "architecture": "Ampere",
        "memory_gb": Decimal("80"),
        "memory_type": "HBM2e ECC",
        "int8_tops": Decimal("312"),
        "fp32_tflops": None,
        "tensor_tflops": Decimal("624"),
        "uses": ["ml_training", "hpc"],
        "notes": A100_NOTES,
        "sort_order": 20,
    },
    {
        "resource_name": "nvidia.com/H100_94GB",
        "display_name": "NVIDIA H100",
        "architecture": "Hopper",
        "memory_gb": Decimal("80"),
        "memory_type": "HBM3 ECC",
        "int8_tops": Decimal("1979"),
        "fp32_tflops": None,
        "tensor_tflops": Decimal("989"),
        "uses": ["llm", "transformers", "exascale"],
        "notes": H100_NOTES,
        "sort_order": 30,
    },
]

# Cozystack's default passthrough list (domain reference §4.2). The architecture follows from the
# chip code in the name (GH100 Hopper, GA10x Ampere, AD10x Ada Lovelace, TU104 Turing, GV100 Volta).
OTHERS = [
    ("nvidia.com/GH100_H200_SXM_141GB", "NVIDIA H200 SXM 141GB", "Hopper"),
    ("nvidia.com/GH100_H100_SXM5_80GB", "NVIDIA H100 SXM5 80GB", "Hopper"),
    ("nvidia.com/GH100_H100_PCIE", "NVIDIA H100 PCIe", "Hopper"),
    ("nvidia.com/GH100_H100L_94GB", "NVIDIA H100 NVL 94GB", "Hopper"),
    ("nvidia.com/AD102GL_L40", "NVIDIA L40", "Ada Lovelace"),
    ("nvidia.com/AD104GL_L4", "NVIDIA L4", "Ada Lovelace"),
    ("nvidia.com/GA100_A100_PCIE_40GB", "NVIDIA A100 PCIe 40GB", "Ampere"),
    ("nvidia.com/GA100_A100_SXM4_80GB", "NVIDIA A100 SXM4 80GB", "Ampere"),
    ("nvidia.com/GA100_A100_SXM4_40GB", "NVIDIA A100 SXM4 40GB", "Ampere"),
    ("nvidia.com/GA100GL_A30_PCIE", "NVIDIA A30 PCIe", "Ampere"),
    ("nvidia.com/GA102GL_A40", "NVIDIA A40", "Ampere"),
    ("nvidia.com/GA102GL_A10", "NVIDIA A10", "Ampere"),
    ("nvidia.com/TU104GL_TESLA_T4", "NVIDIA Tesla T4", "Turing"),
    ("nvidia.com/GV100GL_TESLA_V100_SXM2_16GB", "NVIDIA Tesla V100 SXM2 16GB", "Volta"),
    ("nvidia.com/GV100GL_TESLA_V100_SXM2_32GB", "NVIDIA Tesla V100 SXM2 32GB", "Volta"),
    ("nvidia.com/GV100GL_TESLA_V100_PCIE_16GB", "NVIDIA Tesla V100 PCIe 16GB", "Volta"),
    ("nvidia.com/GV100GL_TESLA_V100S_PCIE_32GB", "NVIDIA Tesla V100S PCIe 32GB", "Volta"),
]


def seed(apps, schema_editor):
    GpuModel = apps.get_model("catalog", "GpuModel")
    for row in OFFERED:
        values = dict(row, offered=True, is_known=True)
        values["notes"] = french_spaces(values.get("notes", {}))
        GpuModel.objects.update_or_create(
            resource_name=values.pop("resource_name"), defaults=values
        )
    for order, (resource_name, display_name, architecture) in enumerate(OTHERS, start=100):
        GpuModel.objects.update_or_create(
            resource_name=resource_name,
            defaults={
                "display_name": display_name,
                "architecture": architecture,
                "offered": False,
                "is_known": True,
                "sort_order": order,
            },
        )


def unseed(apps, schema_editor):
    GpuModel = apps.get_model("catalog", "GpuModel")
    names = [row["resource_name"] for row in OFFERED] + [row[0] for row in OTHERS]
    GpuModel.objects.filter(resource_name__in=names).delete()


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
