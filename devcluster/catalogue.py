"""What a Cozystack v1.1 cluster offers at install time, the charts look up and the portal lists:
KubeVirt cluster instance types and preferences, golden images, storage classes.

* Instance types and preferences are the objects of cozystack v1.1.0
  `packages/system/kubevirt-instancetypes/templates/{instancetypes,preferences}.yaml`, verbatim
  (`schemas/kubevirt-*.v1.1.0.json`): u1, cx1, m1, n1, o1, rt1 and the deprecated gn1 series;
  `ubuntu`, `fedora`, `centos.stream9`, `rhel.9`, `windows.2k22.virtio`, ... preferences.
* Golden images are CDI DataVolumes `vm-image-<name>` in `cozy-public`, made as cozystack's
  `hack/cdi_golden_image_create.sh` makes them (http source, 5Gi, `replicated`); the vm-disk chart
  clones `vm-image-<source.image.name>` (`packages/apps/vm-disk/templates/dv.yaml`). Names: Hikube's
  `{os}-{version}` images and the names the vm-disk schema lists (`ubuntu`, `fedora`, `cirros`,
  `alpine`, `talos`).
* Storage classes: Hikube's `local`, `replicated` (the default), `replicated-async` (LINSTOR).
"""

from __future__ import annotations

import copy
from typing import Any

from .fleet import stable_uuid
from .resources import DATAVOLUMES, INSTANCETYPES, PREFERENCES, STORAGECLASSES
from .schemas import load_schema
from .store import now_rfc3339

IMAGE_NAMESPACE = "cozy-public"
IMAGE_PREFIX = "vm-image-"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"

GOLDEN_IMAGES = {
    "ubuntu-2404": "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
    "ubuntu-2204": "https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img",
    "debian-12": "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2",
    "rocky-9": "https://dl.rockylinux.org/pub/rocky/9/images/x86_64/Rocky-9-GenericCloud.latest.x86_64.qcow2",
    "almalinux-9": "https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/AlmaLinux-9-GenericCloud-latest.x86_64.qcow2",
    "ubuntu": "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
    "fedora": "https://download.fedoraproject.org/pub/fedora/linux/releases/41/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2",
    "cirros": "https://download.cirros-cloud.net/0.6.2/cirros-0.6.2-x86_64-disk.img",
    "alpine": "https://dl-cdn.alpinelinux.org/alpine/v3.20/releases/cloud/nocloud_alpine-3.20.2-x86_64-bios-cloudinit-r0.qcow2",
    "talos": "https://factory.talos.dev/image/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba/v1.9.5/nocloud-amd64.raw.xz",
}
STORAGE_CLASSES = {
    "local": {"autoPlace": "1", "storagePool": "data"},
    "replicated": {"autoPlace": "3", "storagePool": "data"},
    "replicated-async": {"autoPlace": "2", "storagePool": "data", "protocol": "A"},
}
DEFAULT_STORAGE_CLASS = "replicated"


def _meta(obj: dict[str, Any], created: float, ns: str = "") -> dict[str, Any]:
    out = copy.deepcopy(obj)
    md = out.setdefault("metadata", {})
    md["uid"] = stable_uuid("catalogue", out["kind"], ns, md["name"])
    md["creationTimestamp"] = now_rfc3339(created)
    if ns:
        md["namespace"] = ns
    return out


def golden_image(name: str, url: str, created: float) -> dict[str, Any]:
    """A golden image as cozystack's hack/cdi_golden_image_create.sh creates it, imported."""
    return _meta(
        {
            "apiVersion": DATAVOLUMES.api_version,
            "kind": DATAVOLUMES.kind,
            "metadata": {
                "name": IMAGE_PREFIX + name,
                "annotations": {"cdi.kubevirt.io/storage.bind.immediate.requested": "true"},
            },
            "spec": {
                "source": {"http": {"url": url}},
                "storage": {
                    "resources": {"requests": {"storage": "5Gi"}},
                    "storageClassName": "replicated",
                },
            },
            "status": {
                "phase": "Succeeded",
                "progress": "100.0%",
                "claimName": IMAGE_PREFIX + name,
            },
        },
        created,
        IMAGE_NAMESPACE,
    )


def storage_class(name: str, parameters: dict[str, str], created: float) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if name == DEFAULT_STORAGE_CLASS:
        md["annotations"] = {DEFAULT_CLASS_ANNOTATION: "true"}
    return _meta(
        {
            "apiVersion": STORAGECLASSES.api_version,
            "kind": STORAGECLASSES.kind,
            "metadata": md,
            "provisioner": "linstor.csi.linbit.com",
            "parameters": {f"linstor.csi.linbit.com/{k}": v for k, v in parameters.items()},
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": True,
        },
        created,
    )


def catalogue_objects(created: float) -> list[tuple[str, dict[str, Any]]]:
    """(resource key, object) for everything a fresh v1.1 cluster offers."""
    out: list[tuple[str, dict[str, Any]]] = []
    for res, file in (
        (INSTANCETYPES, "kubevirt-instancetypes.v1.1.0.json"),
        (PREFERENCES, "kubevirt-preferences.v1.1.0.json"),
    ):
        for item in load_schema(file)["items"]:
            out.append((res.key, _meta(item, created)))
    for name, url in GOLDEN_IMAGES.items():
        out.append((DATAVOLUMES.key, golden_image(name, url, created)))
    for name, params in STORAGE_CLASSES.items():
        out.append((STORAGECLASSES.key, storage_class(name, params, created)))
    return out
