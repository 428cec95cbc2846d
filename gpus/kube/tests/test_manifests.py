"""Builders vs the REAL chart schemas (after server-side defaulting)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from gpus.kube import apps as m
from gpus.kube.tests.conftest import helm_values

L40S = "nvidia.com/AD102GL_L40S"
A100 = "nvidia.com/GA100_A100_PCIE_80GB"


def assert_valid(schema: dict[str, Any], spec: dict[str, Any]) -> None:
    jsonschema.validate(helm_values(schema, spec), schema)


def errors(schema: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [e.message for e in validator.iter_errors(helm_values(schema, spec))]


# --- VMs ----------------------------------------------------------------------------


def test_vm_disk_from_golden_image(chart_schemas):
    disk = m.vm_disk("gpu-ws-system", "tenant-acme", "ubuntu-2404", "100Gi", "replicated")
    assert disk["apiVersion"] == "apps.cozystack.io/v1alpha1"
    assert disk["kind"] == "VMDisk"
    assert disk["metadata"] == {"name": "gpu-ws-system", "namespace": "tenant-acme"}
    assert disk["spec"]["source"] == {"image": {"name": "ubuntu-2404"}}
    assert_valid(chart_schemas["VMDisk"], disk["spec"])


def test_vm_disk_from_url_and_empty(chart_schemas):
    url = m.vm_disk("d1", "tenant-acme", "https://example.org/img.qcow2", 20, "local")
    assert url["spec"]["source"] == {"http": {"url": "https://example.org/img.qcow2"}}
    assert url["spec"]["storage"] == "20"
    assert_valid(chart_schemas["VMDisk"], url["spec"])
    empty = m.vm_disk("d2", "tenant-acme", "", "5Gi")
    assert empty["spec"]["source"] == {}
    assert_valid(chart_schemas["VMDisk"], empty["spec"])


def test_vm_disk_bad_size_rejected_by_schema(chart_schemas):
    disk = m.vm_disk("d1", "tenant-acme", "ubuntu", "lots")
    assert errors(chart_schemas["VMDisk"], disk["spec"])


def test_vm_instance_multi_gpu(chart_schemas):
    vm = m.vm_instance(
        "gpu-ws",
        "tenant-acme",
        "u1.8xlarge",
        "ubuntu",
        ["gpu-ws-system"],
        [A100] * 4,
        ssh_keys=["ssh-ed25519 AAAA user@host"],
        cloud_init="#cloud-config\n",
        external=True,
        external_ports=(22, 8888),
    )
    spec = vm["spec"]
    assert vm["kind"] == "VMInstance"
    assert spec["gpus"] == [{"name": A100}] * 4
    assert spec["disks"] == [{"name": "gpu-ws-system"}]
    assert spec["runStrategy"] == "Always"
    assert spec["externalPorts"] == [22, 8888]
    assert_valid(chart_schemas["VMInstance"], spec)


def test_vm_instance_halted_and_no_gpu(chart_schemas):
    vm = m.vm_instance(
        "cpu-only", "tenant-acme", "u1.medium", "ubuntu", [], [], run_strategy="Halted"
    )
    assert vm["spec"]["gpus"] == []
    assert_valid(chart_schemas["VMInstance"], vm["spec"])


def test_vm_instance_bad_enum_caught_by_schema(chart_schemas):
    vm = m.vm_instance(
        "x", "tenant-acme", "u1.medium", "ubuntu", [], [L40S], run_strategy="Sometimes"
    )
    assert any("Sometimes" in e for e in errors(chart_schemas["VMInstance"], vm["spec"]))
    vm = m.vm_instance("x", "tenant-acme", "u1.medium", "beos", [], [L40S])
    assert errors(chart_schemas["VMInstance"], vm["spec"])


def test_legacy_virtual_machine(chart_schemas):
    vm = m.legacy_virtual_machine(
        "gpu-vm",
        "tenant-acme",
        "u1.2xlarge",
        "ubuntu",
        [L40S],
        image="ubuntu",
        storage="50Gi",
        storage_class="replicated",
        running=False,
    )
    spec = vm["spec"]
    assert vm["kind"] == "VirtualMachine"
    assert spec["running"] is False and spec["runStrategy"] == "Halted"
    assert spec["systemDisk"] == {
        "image": "ubuntu",
        "storage": "50Gi",
        "storageClass": "replicated",
    }
    assert "disks" not in spec
    assert_valid(chart_schemas["VirtualMachine"], spec)


def test_legacy_image_outside_enum_rejected(chart_schemas):
    vm = m.legacy_virtual_machine(
        "gpu-vm", "tenant-acme", "u1.2xlarge", "ubuntu", [L40S], image="ubuntu-2404"
    )
    assert errors(chart_schemas["VirtualMachine"], vm["spec"])


def test_vm_power_patch():
    assert m.vm_power_patch("VMInstance", False) == {"spec": {"runStrategy": "Halted"}}
    assert m.vm_power_patch("VirtualMachine", True) == {
        "spec": {"runStrategy": "Always", "running": True}
    }


# --- Kubernetes ---------------------------------------------------------------------


def _cluster(disk_field: str) -> dict[str, Any]:
    groups = {
        "md0": m.node_group(
            1, 3, "u1.large", "50Gi", roles=["ingress-nginx"], disk_field=disk_field
        ),
        "gpu": m.node_group(1, 4, "u1.2xlarge", "100Gi", gpus=[L40S], disk_field=disk_field),
    }
    return m.kubernetes_cluster("ml", "tenant-acme", "v1.33", groups)


def test_kubernetes_v11_with_ephemeral_storage(chart_schemas):
    cluster = _cluster("ephemeralStorage")
    spec = cluster["spec"]
    assert cluster["kind"] == "Kubernetes"
    assert spec["addons"]["gpuOperator"] == {"enabled": True, "valuesOverride": {}}
    assert spec["controlPlane"] == {"replicas": 2}
    assert spec["nodeGroups"]["gpu"]["ephemeralStorage"] == "100Gi"
    assert spec["nodeGroups"]["gpu"]["gpus"] == [{"name": L40S}]
    assert_valid(chart_schemas["Kubernetes"], spec)


def test_kubernetes_head_with_disk_size(chart_schemas):
    cluster = _cluster("diskSize")
    cluster["spec"]["version"] = "v1.35"
    assert_valid(chart_schemas["Kubernetes-head"], cluster["spec"])


def test_wrong_disk_field_fails_helm(chart_schemas):
    # The field is discovered because each version refuses the other's: on v1.1 Helm gets
    # the group as sent (cozystack-api defaults on read only), so a diskSize group misses the
    # required ephemeralStorage (a GET would show it defaulted to 20Gi), and on v1.4+ the
    # chart fails to render when ephemeralStorage is present.
    spec = _cluster("diskSize")["spec"]
    assert "'ephemeralStorage' is a required property" in errors(chart_schemas["Kubernetes"], spec)
    head_group = chart_schemas["Kubernetes-head"]["properties"]["nodeGroups"][
        "additionalProperties"
    ]
    assert "ephemeralStorage" not in head_group["properties"]
    assert "diskSize" in head_group["required"]


def test_kubernetes_version_enum(chart_schemas):
    cluster = m.kubernetes_cluster("ml", "tenant-acme", "v1.29", {})
    assert errors(chart_schemas["Kubernetes"], cluster["spec"])


def test_node_group_validation():
    with pytest.raises(m.ManifestError):
        m.node_group(3, 2, "u1.large", "50Gi")
    with pytest.raises(m.ManifestError):
        m.node_group(-1, 2, "u1.large", "50Gi")
    with pytest.raises(m.ManifestError):
        m.node_group(0, 2, "u1.large", "50Gi", disk_field="disk")
    with pytest.raises(m.ManifestError):
        m.node_group(0, 2, "u1.large", "50Gi", gpus=["L40S"])


def test_node_group_merge_patch(chart_schemas):
    new = m.node_group(2, 6, "u1.4xlarge", "200Gi", gpus=[L40S, L40S])
    old = dict(new, storageClass="local")
    patch = m.node_group_merge_patch("gpu", new, previous=old)
    assert patch["spec"]["nodeGroups"]["gpu"]["storageClass"] is None
    assert patch["spec"]["nodeGroups"]["gpu"]["maxReplicas"] == 6
    assert m.node_group_merge_patch("gpu", None) == {"spec": {"nodeGroups": {"gpu": None}}}
    with pytest.raises(m.ManifestError):
        m.node_group_merge_patch("GPU_1", None)


# --- names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "limit"),
    [("VMInstance", 41), ("VMDisk", 45), ("Kubernetes", 42), ("VirtualMachine", 37)],
)
def test_name_length_limits(kind, limit):
    assert m.max_name_length(kind) == limit
    m.validate_name(kind, "a" * limit)
    with pytest.raises(m.ManifestError, match=f"at most {limit}"):
        m.validate_name(kind, "a" * (limit + 1))
    assert len(m.PREFIXES[kind] + "a" * limit) == 53  # the HelmRelease name


@pytest.mark.parametrize("bad", ["", "1abc", "Abc", "a_b", "abc-", "-abc", "a.b", "é"])
def test_bad_names(bad):
    assert m.name_errors("VMInstance", bad)
    with pytest.raises(m.ManifestError):
        m.vm_instance(bad, "tenant-acme", "u1.medium", "ubuntu", [], [])


def test_too_long_name_in_builders():
    with pytest.raises(m.ManifestError):
        m.kubernetes_cluster("k" * 43, "tenant-acme", "v1.33", {})
    with pytest.raises(m.ManifestError):
        m.vm_disk("d" * 46, "tenant-acme", "ubuntu", "5Gi")


def test_plurals():
    assert m.plural_for({"kind": "Kubernetes"}) == "kuberneteses"
    assert m.plural_for("VMInstance") == "vminstances"
    with pytest.raises(m.ManifestError):
        m.plural_for("Pod")
