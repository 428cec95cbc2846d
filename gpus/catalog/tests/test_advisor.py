import pytest
from django.urls import reverse

from gpus.catalog.advisor import recommend
from gpus.catalog.choices import Approach, Workload
from gpus.catalog.models import GpuModel

pytestmark = pytest.mark.django_db

EXPECTED = {
    Workload.INFERENCE: ("nvidia.com/AD102GL_L40S", Approach.KUBERNETES),
    Workload.TRAINING: ("nvidia.com/GA100_A100_PCIE_80GB", Approach.KUBERNETES),
    Workload.LLM: ("nvidia.com/H100_94GB", Approach.KUBERNETES),
    Workload.RENDERING: ("nvidia.com/AD102GL_L40S", Approach.VM),
    Workload.LEGACY: ("nvidia.com/AD102GL_L40S", Approach.VM),
    Workload.DEVELOPMENT: ("nvidia.com/AD102GL_L40S", Approach.VM),
}


@pytest.mark.parametrize("workload", list(Workload))
def test_each_workload_gets_the_seeds_model_and_approach(workload):
    advice = recommend(workload, GpuModel.objects.all())
    assert advice.model is not None
    assert (advice.model.resource_name, advice.approach) == EXPECTED[workload]
    assert str(advice.approach_reason)


def test_no_offered_model_means_no_model_not_a_crash():
    GpuModel.objects.update(offered=False)
    assert recommend(Workload.LLM, GpuModel.objects.all()).model is None


def test_advisor_page_answers_with_model_approach_and_why(alice_client):
    response = alice_client.get(reverse("gpus:advisor"), {"workload": "llm"})
    html = response.content.decode()
    assert "NVIDIA H100" in html
    assert "Kubernetes worker nodes with GPUs" in html
    assert "u1.2xlarge" in html


def test_advisor_rejects_an_unknown_workload_next_to_the_field(alice_client):
    response = alice_client.get(reverse("gpus:advisor"), {"workload": "mining"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
