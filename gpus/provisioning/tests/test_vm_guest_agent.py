"""Issue 16 item 8: the guest agent is offered in the VM form at creation (cloud-init runs once),
the driver snippet fits the image's family, and the agent asks nvidia-smi for
``clocks_event_reasons.active``. Against devcluster over HTTP: the VM is created through the page,
driven as the tasks do, synced, and its agent's first post (with the token the form put in the
cloud-init) is stored as this VM's."""

from __future__ import annotations

import re

import pytest
import yaml
from django.test import Client, override_settings
from django.urls import reverse

from devcluster.testing import run_devcluster
from gpus.inventory import sync
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import Operation
from gpus.provisioning.tests.test_provisioning_devcluster import drive
from gpus.testing import seed_catalog
from gpus.utilization.agent import revoke_tokens
from gpus.utilization.models import AgentToken, GpuDevice

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

H100 = "nvidia.com/H100_94GB"


@pytest.fixture
def catalog(db):
    seed_catalog()


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    with run_devcluster(tmp_path_factory.mktemp("dc"), flavour="current", speed=200.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, register) -> Cluster:
    return register(dc, f"dc{dc.port}")


def form(**extra: str) -> dict[str, str]:
    data = {
        "name": "agent-vm",
        "gpu_model": H100,
        "gpu_count": "1",
        "instance_type": "u1.2xlarge",
        "instance_profile": "ubuntu",
        "image": "ubuntu-2404",
        "disk_size_gi": "50",
        "storage_class": "replicated",
        "external": "none",
        "install_driver": "on",
        "cloud_init": "",
        "run_strategy": "Always",
    }
    data.update(extra)
    return data


def cloud_init_of(op: Operation) -> dict:
    vm = next(d for d in op.manifests if d["kind"] == "VMInstance")
    text = vm["spec"]["cloudInit"]
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def test_the_driver_snippet_fits_the_image_family(alice_client, acme, cluster):
    url = f"/tenants/{acme.namespace}/vms/new/"
    cases = {
        ("ubuntu-2404", "ubuntu"): "apt-get install -y nvidia-driver-550",
        ("debian-12", "ubuntu"): "non-free",
        ("rocky-9", "rhel.9"): "dnf module install -y nvidia-driver:550-dkms",
        ("almalinux-9", "centos.stream9"): "cuda-rhel9.repo",
    }
    for i, ((image, profile), expected) in enumerate(cases.items()):
        page = alice_client.post(url, form(name=f"drv-{i}", image=image, instance_profile=profile))
        assert page.status_code == 302, page.content.decode()[:2000]
        op = Operation.objects.get(name=f"drv-{i}")
        commands = " ".join(str(c) for c in cloud_init_of(op)["runcmd"])
        assert expected in commands, (image, commands)
        if image != "ubuntu-2404":
            assert "nvidia-driver-550 nvidia-utils-550" not in commands  # Ubuntu's packages


@override_settings(METRICS_AGENT_MIN_INTERVAL=30)
def test_the_agent_offered_at_creation_posts_as_its_vm(alice_client, acme, cluster):
    page = alice_client.get(f"/tenants/{acme.namespace}/vms/new/").content.decode()
    assert 'name="guest_agent"' in page
    mine = "#cloud-config\nruncmd:\n  - echo hello\n"
    answer = alice_client.post(
        f"/tenants/{acme.namespace}/vms/new/", form(guest_agent="on", cloud_init=mine)
    )
    assert answer.status_code == 302
    op = Operation.objects.get(name="agent-vm")
    config = cloud_init_of(op)
    # The person's own command, the driver, then the agent: one cloud-config document.
    commands = [str(c) for c in config["runcmd"]]
    assert commands[0] == "echo hello"
    assert any("nvidia-driver-550" in c for c in commands)
    assert any("hikube-gpu-agent.timer" in c for c in commands)
    files = {f["path"]: f["content"] for f in config["write_files"]}
    assert "clocks_event_reasons.active" in files["/usr/local/bin/hikube-gpu-agent"]
    token = re.search(r"TOKEN=(\S+)", files["/etc/hikube-gpu-agent.env"]).group(1)
    op = drive(op, {OperationState.SUCCEEDED, OperationState.FAILED}, seconds=60)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)

    agent = Client(enforce_csrf_checks=True)
    line = (
        "GPU-99999999-2222-3333-4444-555555555555, 0, NVIDIA H100 NVL, 12, 1000, 95830, 40, "
        "90.00, 400.00, 1785, 2619, 0x0000000000000001\n"
    )

    def post(token: str) -> int:
        return agent.post(
            reverse("gpus:agent_ingest"),
            line,
            content_type="text/csv",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        ).status_code

    assert post(token[:-3] + "xyz") == 401  # a forged signature
    sync.sync_cluster(cluster.pk)
    vm = GpuWorkload.objects.get(name="agent-vm")
    assert post(token) == 202
    device = GpuDevice.objects.get(uuid="GPU-99999999-2222-3333-4444-555555555555")
    assert device.workload == vm and device.source == "guest-agent"
    assert AgentToken.objects.get(workload=vm).revoked_at is None
    revoke_tokens(vm)
    AgentToken.objects.filter(workload=vm).update(last_used_at=None)
    assert post(token) == 401  # revoked: never bound again
