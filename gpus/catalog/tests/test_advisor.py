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


def test_the_size_is_one_the_cluster_serves():
    from gpus.catalog.sizing import served_instance_type

    # The FAQ's own when served, or when nothing is known to be served.
    assert served_instance_type(1, {"u1.2xlarge": 8, "u1.4xlarge": 16}) == "u1.2xlarge"
    assert served_instance_type(1, {}) == "u1.2xlarge"
    # Else the smallest with 8 vCPU per GPU, the u1 series first; else the largest served.
    served = {"u1.xlarge": 4, "u1.4xlarge": 16, "cx1.2xlarge": 8, "gpu.large": 8}
    assert served_instance_type(1, served) == "u1.4xlarge"
    assert served_instance_type(1, {"cx1.4xlarge": 16, "m1.2xlarge": 8}) == "m1.2xlarge"
    assert served_instance_type(1, {"u1.small": 1, "u1.xlarge": 4}) == "u1.xlarge"


def test_advisor_page_sizes_from_the_clusters_catalogue(alice_client):
    from django.utils import timezone

    from gpus.inventory.models import CatalogueEntry, Cluster

    cluster = Cluster.objects.create(name="dc", last_synced_at=timezone.now())
    for name, vcpu in (("u1.xlarge", 4), ("u1.4xlarge", 16), ("cx1.2xlarge", 8)):
        CatalogueEntry.objects.create(
            cluster=cluster, kind=CatalogueEntry.Kind.INSTANCE_TYPE, name=name, vcpu=vcpu,
            memory_mib=vcpu * 4096,
        )  # fmt: skip
    html = alice_client.get(reverse("gpus:advisor"), {"workload": "llm"}).content.decode()
    assert "<code>u1.4xlarge</code>" in html and "u1.2xlarge" not in html
