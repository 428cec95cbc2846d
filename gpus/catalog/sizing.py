"""What the portal knows about instance types and OS images (domain reference §2, §3); which
ones exist is the cluster's catalogue (inventory's CatalogueEntry)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from django.utils.translation import gettext_lazy as _

# Instance types, profiles, images and storage classes are what the cluster serves (inventory's
# CatalogueEntry); only knowledge about them lives here. The series' meaning (KubeVirt
# common-instancetypes, cozystack v1.1 packages/system/kubevirt-instancetypes):
SERIES_LABELS = {
    "u1": _("Universal (1:4, recommended for GPUs)"),
    "m1": _("Memory (1:8)"),
    "cx1": _("Compute exclusive (1:2)"),
    "n1": _("Network (DPDK)"),
    "o1": _("Overcommitted"),
    "rt1": _("Realtime"),
}
MIN_VCPU_PER_GPU = 8


def recommended_instance_type(gpus: int) -> str:
    """Hikube FAQ: 1 GPU -> u1.2xlarge, multi-GPU -> u1.8xlarge (8-16 vCPU per GPU)."""
    if gpus <= 1:
        return "u1.2xlarge"
    if gpus == 2:
        return "u1.4xlarge"
    return "u1.8xlarge"


def served_instance_type(gpus: int, served: Mapping[str, int]) -> str:
    """What to recommend for `gpus` GPUs among the instance types a cluster serves (name ->
    vCPU): the FAQ's own if served; else the smallest that still gives MIN_VCPU_PER_GPU per GPU,
    the u1 series first; else the largest served. The FAQ's name when nothing is known served."""
    faq = recommended_instance_type(gpus)
    if not served or faq in served:
        return faq
    enough = [n for n, vcpu in served.items() if vcpu >= MIN_VCPU_PER_GPU * max(gpus, 1)]
    if enough:
        return min(enough, key=lambda n: (instance_series(n) != "u1", served[n], n))
    return max(served, key=lambda n: (served[n], instance_series(n) == "u1", n))


def instance_series(name: str) -> str:
    """``u1.2xlarge`` -> ``u1``."""
    return name.split(".", 1)[0]


def os_family(image: str) -> str:
    """An image's operating system family from its name: ``ubuntu-2404`` -> ``ubuntu``,
    ``almalinux-9`` -> ``almalinux`` ("" when the name starts with no letter)."""
    match = re.match(r"[a-z]+", image)
    return match.group(0) if match else ""


FAMILY_LABELS = {
    "ubuntu": "Ubuntu",
    "debian": "Debian",
    "rocky": "Rocky Linux",
    "almalinux": "AlmaLinux",
    "centos": "CentOS",
    "rhel": "RHEL",
    "fedora": "Fedora",
    "alpine": "Alpine",
    "cirros": "CirrOS",
    "talos": "Talos",
    "windows": "Windows",
}


def image_label(image: str) -> str:
    """``ubuntu-2404`` -> ``Ubuntu 24.04``, ``rocky-9`` -> ``Rocky Linux 9``; a name of an
    unknown family is shown as it is."""
    family = os_family(image)
    if family not in FAMILY_LABELS:
        return image
    version = image[len(family) :].strip("-_.")
    if family == "ubuntu" and re.fullmatch(r"\d{4}", version):
        version = f"{version[:2]}.{version[2:]}"  # Ubuntu's YY.MM
    return f"{FAMILY_LABELS[family]} {version}".strip()


# What each OS family is, for the form's cross-checks: the OS profiles (preferences) that fit it
# (absent: any Linux profile), its package manager (the Hikube driver snippet needs apt-get), and
# the user its cloud image creates for the SSH keys cloud-init installs.
FAMILY_PROFILES: dict[str, tuple[str, ...]] = {
    "ubuntu": ("ubuntu",),
    "debian": ("ubuntu",),  # no Debian preference is served: Ubuntu's fits it
    "rocky": ("centos.stream9", "rhel.9"),
    "almalinux": ("centos.stream9", "rhel.9"),
    "centos": ("centos.stream9", "centos.stream10"),
    "rhel": ("rhel.9", "rhel.10"),
    "fedora": ("fedora",),
    "alpine": ("alpine",),
    "cirros": ("cirros",),
}
FAMILY_PACKAGER: dict[str, str] = {
    "ubuntu": "apt",
    "debian": "apt",
    "rocky": "dnf",
    "almalinux": "dnf",
    "centos": "dnf",
    "rhel": "dnf",
    "fedora": "dnf",
    "alpine": "apk",
}
FAMILY_USERS: dict[str, str] = {
    "ubuntu": "ubuntu",
    "debian": "debian",
    "rocky": "rocky",
    "almalinux": "almalinux",
    "centos": "cloud-user",
    "rhel": "cloud-user",
    "fedora": "fedora",
    "alpine": "alpine",
    "cirros": "cirros",
}
# The Hikube FAQ's NVIDIA driver snippet for a VM's cloud-init (Ubuntu's packages).
NVIDIA_DRIVER_CLOUD_INIT = """#cloud-config
runcmd:
  - apt-get update
  - apt-get install -y linux-headers-$(uname -r)
  - apt-get install -y nvidia-driver-550 nvidia-utils-550
"""
# The same driver for the other families the golden images come in, each with its own package
# manager and repositories: Debian 12 ships it in non-free (nvidia-driver, nvidia-smi apart);
# the RHEL family (Rocky, AlmaLinux, RHEL 9) takes NVIDIA's CUDA repository and its DKMS module
# stream (NVIDIA driver installation guide, "Red Hat Enterprise Linux 9").
DEBIAN_DRIVER_CLOUD_INIT = """#cloud-config
runcmd:
  - >-
    sed -i 's/^Components: main$/Components: main contrib non-free non-free-firmware/'
    /etc/apt/sources.list.d/debian.sources
  - apt-get update
  - >-
    DEBIAN_FRONTEND=noninteractive
    apt-get install -y linux-headers-$(uname -r) nvidia-driver nvidia-smi
"""
RHEL_DRIVER_CLOUD_INIT = """#cloud-config
runcmd:
  - dnf install -y epel-release dnf-plugins-core
  - >-
    dnf config-manager --add-repo
    https://developer.download.nvidia.com/compute/cuda/repos/rhel9/x86_64/cuda-rhel9.repo
  - dnf install -y kernel-devel-$(uname -r) kernel-headers-$(uname -r)
  - dnf module install -y nvidia-driver:550-dkms
"""
# OS family -> its driver snippet (no entry: the person's own cloud-init installs it).
FAMILY_DRIVER_CLOUD_INIT: dict[str, str] = {
    "ubuntu": NVIDIA_DRIVER_CLOUD_INIT,
    "debian": DEBIAN_DRIVER_CLOUD_INIT,
    "rocky": RHEL_DRIVER_CLOUD_INIT,
    "almalinux": RHEL_DRIVER_CLOUD_INIT,
    "rhel": RHEL_DRIVER_CLOUD_INIT,
}


def driver_cloud_init(family: str) -> str:
    """The driver snippet for an OS family, "" when the portal has none for it."""
    return FAMILY_DRIVER_CLOUD_INIT.get(family, "")
