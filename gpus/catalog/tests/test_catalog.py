from decimal import Decimal

import pytest
from django.urls import reverse

from gpus.catalog.models import GpuModel

pytestmark = pytest.mark.django_db


def test_seed_has_the_overviews_three_models_checked_against_the_data_sheets():
    """The overview's figures where they are right; NVIDIA's data sheets (dense) where not."""
    l40s = GpuModel.objects.get(resource_name="nvidia.com/AD102GL_L40S")
    a100 = GpuModel.objects.get(resource_name="nvidia.com/GA100_A100_PCIE_80GB")
    h100 = GpuModel.objects.get(resource_name="nvidia.com/H100_94GB")
    assert (l40s.architecture, l40s.memory_gb, l40s.memory_type) == (
        "Ada Lovelace",
        Decimal("48"),
        "GDDR6 ECC",
    )
    # The page's "362 TOPS INT8" is the dense FP16 Tensor figure; the data sheet: 733 INT8.
    assert (l40s.int8_tops, l40s.fp32_tflops, l40s.tensor_tflops) == (
        Decimal("733"),
        Decimal("91.6"),
        None,
    )
    assert (a100.architecture, a100.memory_gb, a100.memory_type) == (
        "Ampere",
        Decimal("80"),
        "HBM2e ECC",
    )
    assert (a100.int8_tops, a100.tensor_tflops, a100.fp32_tflops) == (
        Decimal("312"),
        Decimal("624"),
        None,
    )
    # nvidia.com/H100_94GB is the H100 NVL: 94 GB, not the H100 SXM's 80 GB and figures.
    assert (h100.display_name, h100.architecture, h100.memory_gb, h100.memory_type) == (
        "NVIDIA H100 NVL",
        "Hopper",
        Decimal("94"),
        "HBM3 ECC",
    )
    assert (h100.int8_tops, h100.tensor_tflops) == (Decimal("1670.5"), Decimal("835.5"))
    assert set(GpuModel.objects.filter(offered=True).values_list("resource_name", flat=True)) == {
        "nvidia.com/AD102GL_L40S",
        "nvidia.com/GA100_A100_PCIE_80GB",
        "nvidia.com/H100_94GB",
    }


def test_h100_carries_the_94gb_versus_80gb_caveat():
    h100 = GpuModel.objects.get(resource_name="nvidia.com/H100_94GB")
    assert "94 GB" in h100.notes["en"] and "80 GB" in h100.notes["en"]
    assert "H100 SXM" in h100.notes["en"] and "1979 TOPS" in h100.notes["en"]
    assert "94 Go" in h100.notes["fr"]
    l40s = GpuModel.objects.get(resource_name="nvidia.com/AD102GL_L40S")
    assert "362 TOPS INT8" in l40s.notes["en"] and "733 TOPS INT8" in l40s.notes["en"]


def test_the_compare_page_and_advisor_say_whole_gpus_and_where_the_page_differs(alice_client):
    """v1.1 runs the GPU operator without time-slicing or MIG: no "sharing between pods"."""
    compare = alice_client.get(reverse("gpus:compare")).content.decode()
    assert "Yes (between pods)" not in compare and "GPU sharing" not in compare
    assert "No: a pod gets whole GPUs" in compare
    assert "94 GB H100 NVL, not the 80 GB H100 SXM" in compare.replace("&#x27;", "'")
    for workload in ("inference", "training", "llm", "rendering", "legacy", "development"):
        advice = alice_client.get(reverse("gpus:advisor"), {"workload": workload})
        assert "sharing between" not in advice.content.decode()


def test_other_default_passthrough_names_are_known_but_have_no_invented_figures():
    others = GpuModel.objects.filter(offered=False)
    assert others.filter(resource_name="nvidia.com/GH100_H100L_94GB").exists()
    assert others.count() >= 17
    assert not others.exclude(memory_gb=None).exists()
    assert not others.exclude(int8_tops=None).exists()


def test_catalog_page_shows_cards_with_specs(alice_client):
    response = alice_client.get(reverse("gpus:catalog"))
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("NVIDIA L40S", "nvidia.com/GA100_A100_PCIE_80GB", "91.6 TFLOPS", "1670.5 TOPS"):
        assert text in html


def test_unknown_model_shows_up_flagged(alice_client):
    GpuModel.objects.create(
        resource_name="nvidia.com/GB202_RTX_PRO_6000",
        display_name="GB202_RTX_PRO_6000",
        is_known=False,
    )
    html = alice_client.get(reverse("gpus:catalog")).content.decode()
    assert "nvidia.com/GB202_RTX_PRO_6000" in html
    assert "Unknown model" in html


def test_anonymous_user_is_sent_to_login(client):
    response = client.get(reverse("gpus:catalog"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_login_with_password_works(client, alice):
    from gpus.testing import PASSWORD

    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("gpus:catalog")).status_code == 200


def test_wrong_password_gets_an_error_not_a_500(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
