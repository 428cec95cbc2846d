"""The catalogue parsers and the words that name what the cluster does not have (pure)."""

from __future__ import annotations

import pytest

from devcluster.catalogue import catalogue_objects
from gpus.kube import records
from gpus.kube.operations import helm_failure_is_final, missing_from_cluster

KINDS = {
    "VirtualMachineClusterInstancetype": records.INSTANCE_TYPE,
    "VirtualMachineClusterPreference": records.PREFERENCE,
    "DataVolume": records.IMAGE,
    "StorageClass": records.STORAGE_CLASS,
}


def served() -> dict[str, records.CatalogueItem]:
    out = {}
    for _key, obj in catalogue_objects(0.0):
        item = records.catalogue_item_from_json(KINDS[obj["kind"]], obj)
        if item is not None:
            out[f"{item.kind}/{item.name}"] = item
    return out


def test_items_read_as_the_v11_objects_say() -> None:
    items = served()
    nano = items["instancetype/o1.nano"]
    assert (nano.vcpu, nano.memory_mib) == (1, 512)
    gn1 = items["instancetype/gn1.xlarge"]
    assert gn1.deprecated and gn1.gpus
    assert not items["instancetype/u1.2xlarge"].deprecated
    assert items["preference/windows.2k22.virtio"].windows
    assert items["preference/ubuntu"].label == "Ubuntu"
    assert "image/ubuntu-2404" in items  # the vm-image- prefix is the chart's, not the name's
    assert items["storageclass/replicated"].default
    assert not items["storageclass/local"].default


def test_a_data_volume_that_is_not_a_golden_image_is_not_offered() -> None:
    other = {"metadata": {"name": "scratch"}}
    assert records.catalogue_item_from_json(records.IMAGE, other) is None
    assert (
        records.catalogue_item_from_json(records.IMAGE, {"metadata": {"name": "vm-image-"}}) is None
    )


@pytest.mark.parametrize(
    ("message", "missing"),
    [
        (
            "...: Specified instanceType does not exist in the cluster: u9.big",
            ("instance_type", "u9.big"),
        ),
        ("...: Specified instancetype not exists in cluster: u9.big", ("instance_type", "u9.big")),
        ("...: Specified instanceProfile does not exist in the cluster: sles", ("profile", "sles")),
        ("...: Specified profile not exists in cluster: sles", ("profile", "sles")),
        ("The source pvc vm-image-rocky-9 doesn't exist", ("image", "rocky-9")),
        ("Specified disk not exists in cluster: a-system", None),
    ],
)
def test_what_the_cluster_does_not_have(message: str, missing: tuple[str, str] | None) -> None:
    assert missing_from_cluster(message) == missing


def test_the_legacy_profile_message_is_final() -> None:
    assert helm_failure_is_final(
        "Helm install failed ...: Specified profile not exists in cluster: x"
    )
