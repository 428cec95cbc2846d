"""The catalog's figures checked against NVIDIA's data sheets (#16 item 9).

Hikube's GPU overview is kept where it is right. Where it is not, the portal shows the data sheet
and the model's note says what the page says and why the portal differs:

- nvidia.com/H100_94GB is the H100 NVL (PCI 10DE:2321, 94 GB HBM3). The page's 80 GB,
  1979 TOPS INT8 and 989 TFLOPS Tensor are the H100 SXM's (dense). NVIDIA's H100 data sheet, H100
  NVL column: INT8 Tensor 3,341 TOPS and FP16 Tensor 1,671 TFLOPS with sparsity, half without.
- L40S: the page's "362 TOPS INT8" is the dense FP16 Tensor figure (362.05 TFLOPS); the L40S data
  sheet gives INT8 Tensor 733 TOPS dense (1,466 with sparsity).
"""

from decimal import Decimal

from django.db import migrations

FIGURES = {
    "nvidia.com/H100_94GB": {
        "display_name": "NVIDIA H100 NVL",
        "memory_gb": Decimal("94"),
        "int8_tops": Decimal("1670.5"),
        "tensor_tflops": Decimal("835.5"),
        "notes": {
            "en": (
                "nvidia.com/H100_94GB is the H100 NVL (PCI 10DE:2321, 94 GB HBM3, the same card as "
                "Cozystack's nvidia.com/GH100_H100L_94GB). Hikube's GPU page lists 80 GB, "
                "1979 TOPS INT8 and 989 TFLOPS Tensor: those are the H100 SXM's figures. Shown "
                "here: NVIDIA's H100 NVL data sheet without sparsity (INT8 3341 TOPS and FP16 "
                "Tensor 1671 TFLOPS with sparsity, half without)."
            ),
            "fr": (
                "nvidia.com/H100_94GB est la H100 NVL (PCI 10DE:2321, 94 Go de HBM3, la même carte "
                "que nvidia.com/GH100_H100L_94GB chez Cozystack). La page GPU de Hikube indique "
                "80 Go, 1979 TOPS INT8 et 989 TFLOPS Tensor\u00a0: ce sont les chiffres de la "
                "H100 SXM. Affichés ici\u00a0: la fiche technique NVIDIA de la H100 NVL sans "
                "parcimonie (INT8 3341 TOPS et tensor FP16 1671 TFLOPS avec parcimonie, moitié "
                "sans)."
            ),
            "de": (
                "nvidia.com/H100_94GB ist die H100 NVL (PCI 10DE:2321, 94 GB HBM3, dieselbe Karte "
                "wie nvidia.com/GH100_H100L_94GB bei Cozystack). Die GPU-Seite von Hikube nennt "
                "80 GB, 1979 TOPS INT8 und 989 TFLOPS Tensor: das sind die Werte der H100 SXM. "
                "Hier gezeigt: NVIDIAs Datenblatt der H100 NVL ohne Sparsity (INT8 3341 TOPS und "
                "FP16-Tensor 1671 TFLOPS mit Sparsity, halb so viel ohne)."
            ),
        },
    },
    "nvidia.com/AD102GL_L40S": {
        "int8_tops": Decimal("733"),
        "notes": {
            "en": (
                "Inside a VM, nvidia-smi reports 46068 MiB in total. Hikube's GPU page gives "
                "362 TOPS INT8, which is NVIDIA's dense FP16 Tensor figure (362 TFLOPS); the L40S "
                "data sheet gives 733 TOPS INT8 without sparsity (1466 with), shown here."
            ),
            "fr": (
                "Dans une VM, nvidia-smi affiche 46068 Mio au total. La page GPU de Hikube indique "
                "362 TOPS INT8, le chiffre NVIDIA du tensor FP16 dense (362 TFLOPS)\u00a0; la fiche "
                "technique de la L40S donne 733 TOPS INT8 sans parcimonie (1466 avec), affichés "
                "ici."
            ),
            "de": (
                "In einer VM meldet nvidia-smi insgesamt 46068 MiB. Die GPU-Seite von Hikube nennt "
                "362 TOPS INT8, NVIDIAs Dense-FP16-Tensor-Wert (362 TFLOPS); das Datenblatt der "
                "L40S nennt 733 TOPS INT8 ohne Sparsity (1466 mit), hier gezeigt."
            ),
        },
    },
}


def apply(apps, schema_editor):
    GpuModel = apps.get_model("catalog", "GpuModel")
    for resource_name, values in FIGURES.items():
        GpuModel.objects.filter(resource_name=resource_name).update(**values)


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_seed_catalog")]

    operations = [migrations.RunPython(apply, migrations.RunPython.noop)]
