"""Hikube's instance types and the choices of the GPU VM form (domain reference §2, §3)."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpu: int
    memory_gb: int
    series: str


# Hikube's table (s1 is Hikube's own; gn1 is deprecated and never offered).
_TABLE = {
    "s1": [
        ("small", 1, 2),
        ("medium", 2, 4),
        ("large", 4, 8),
        ("xlarge", 8, 16),
        ("3large", 12, 24),
        ("2xlarge", 16, 32),
        ("3xlarge", 24, 48),
        ("4xlarge", 32, 64),
        ("8xlarge", 64, 128),
    ],
    "u1": [
        ("medium", 1, 4),
        ("large", 2, 8),
        ("xlarge", 4, 16),
        ("2xlarge", 8, 32),
        ("4xlarge", 16, 64),
        ("8xlarge", 32, 128),
    ],
    "m1": [
        ("large", 2, 16),
        ("xlarge", 4, 32),
        ("2xlarge", 8, 64),
        ("4xlarge", 16, 128),
        ("8xlarge", 32, 256),
    ],
}
INSTANCE_TYPES: dict[str, InstanceType] = {
    f"{series}.{size}": InstanceType(f"{series}.{size}", vcpu, mem, series)
    for series, sizes in _TABLE.items()
    for size, vcpu, mem in sizes
}
SERIES_LABELS = {
    "s1": _("Standard (shared, 1:2)"),
    "u1": _("Universal (1:4, recommended for GPUs)"),
    "m1": _("Memory (1:8)"),
}
MIN_VCPU_PER_GPU = 8


def recommended_instance_type(gpus: int) -> str:
    """Hikube FAQ: 1 GPU -> u1.2xlarge, multi-GPU -> u1.8xlarge (8-16 vCPU per GPU)."""
    if gpus <= 1:
        return "u1.2xlarge"
    if gpus == 2:
        return "u1.4xlarge"
    return "u1.8xlarge"


def instance_type_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    groups = []
    for series, label in SERIES_LABELS.items():
        items = [
            (t.name, f"{t.name} — {t.vcpu} vCPU / {t.memory_gb} GB")
            for t in INSTANCE_TYPES.values()
            if t.series == series
        ]
        groups.append((str(label), items))
    return groups


INSTANCE_PROFILES = [
    ("ubuntu", "Ubuntu"),
    ("fedora", "Fedora"),
    ("centos.stream9", "CentOS Stream 9"),
    ("rhel.9", "RHEL 9"),
    ("opensuse.leap", "openSUSE Leap"),
    ("alpine", "Alpine"),
    ("windows.2k22.virtio", "Windows Server 2022"),
]
# Hikube golden images ({os}-{version}) for a VMDisk (current/head flavours).
DISK_IMAGES = [
    ("ubuntu-2404", "Ubuntu 24.04"),
    ("ubuntu-2204", "Ubuntu 22.04"),
    ("debian-12", "Debian 12"),
    ("rocky-9", "Rocky Linux 9"),
    ("almalinux-9", "AlmaLinux 9"),
]
# The legacy VirtualMachine's systemDisk.image enum.
LEGACY_IMAGES = [
    ("ubuntu", "Ubuntu"),
    ("fedora", "Fedora"),
    ("alpine", "Alpine"),
    ("cirros", "CirrOS"),
    ("talos", "Talos"),
]
# What each image is, for the form's cross-checks: the OS profiles that fit it (empty: any Linux
# profile) and its package manager (the Hikube driver snippet needs apt-get).
IMAGE_PROFILES: dict[str, tuple[str, ...]] = {
    "ubuntu-2404": ("ubuntu",),
    "ubuntu-2204": ("ubuntu",),
    "debian-12": ("ubuntu",),  # no Debian profile is served: Ubuntu's fits it
    "rocky-9": ("centos.stream9", "rhel.9"),
    "almalinux-9": ("centos.stream9", "rhel.9"),
    "ubuntu": ("ubuntu",),
    "fedora": ("fedora",),
    "alpine": ("alpine",),
}
IMAGE_PACKAGER: dict[str, str] = {
    "ubuntu-2404": "apt",
    "ubuntu-2204": "apt",
    "debian-12": "apt",
    "rocky-9": "dnf",
    "almalinux-9": "dnf",
    "ubuntu": "apt",
    "fedora": "dnf",
    "alpine": "apk",
}
# The user each cloud image creates for the SSH keys cloud-init installs (its distribution's own).
IMAGE_USERS: dict[str, str] = {
    "ubuntu-2404": "ubuntu",
    "ubuntu-2204": "ubuntu",
    "debian-12": "debian",
    "rocky-9": "rocky",
    "almalinux-9": "almalinux",
    "ubuntu": "ubuntu",
    "fedora": "fedora",
    "alpine": "alpine",
    "cirros": "cirros",
}
WINDOWS_PROFILES = frozenset({"windows.2k22.virtio"})
STORAGE_CLASSES = [
    ("replicated", _("replicated (survives a server failure)")),
    ("replicated-async", _("replicated-async")),
    ("local", _("local (fastest, lost with the server)")),
]
# The Hikube FAQ's NVIDIA driver snippet for a VM's cloud-init (Ubuntu's packages).
NVIDIA_DRIVER_CLOUD_INIT = """#cloud-config
runcmd:
  - apt-get update
  - apt-get install -y linux-headers-$(uname -r)
  - apt-get install -y nvidia-driver-550 nvidia-utils-550
"""
# The same driver for the other families the golden images come in, each with its own package
# manager and repositories: Debian 12 ships it in non-free (nvidia-driver, nvidia-smi apart);
# the RHEL family (Rocky, AlmaLinux) takes NVIDIA's CUDA repository and its DKMS module stream
# (NVIDIA driver installation guide, "Red Hat Enterprise Linux 9").
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
DRIVER_CLOUD_INIT = {
    "ubuntu": NVIDIA_DRIVER_CLOUD_INIT,
    "debian": DEBIAN_DRIVER_CLOUD_INIT,
    "rhel": RHEL_DRIVER_CLOUD_INIT,
}
# Image name (Hikube's golden images are {os}-{version}) -> its family.
_FAMILIES = {
    "ubuntu": "ubuntu",
    "debian": "debian",
    "rocky": "rhel",
    "almalinux": "rhel",
    "rhel": "rhel",
    "centos": "rhel",
    "fedora": "fedora",
    "alpine": "alpine",
}


def image_family(image: str) -> str:
    """``ubuntu-2404`` -> ``ubuntu``, ``rocky-9`` -> ``rhel``; "" for an image of no known
    family (its driver is the person's own cloud-init)."""
    return _FAMILIES.get((image or "").split("-", 1)[0].lower(), "")


def driver_cloud_init(image: str) -> str:
    """The driver snippet for the image's family, "" when the portal has none for it."""
    return DRIVER_CLOUD_INIT.get(image_family(image), "")
