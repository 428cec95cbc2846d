"""The resources devcluster serves, per API flavour (what discovery, RBAC and routing agree on)."""

from __future__ import annotations

from dataclasses import dataclass, replace

READ = ("get", "list", "watch")
WRITE = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

APPS_GROUP = "apps.cozystack.io"


@dataclass(frozen=True)
class Resource:
    group: str  # "" for core
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    prefix: str = ""  # HelmRelease prefix of a Cozystack application ("" = not an application)
    schema: str = ""  # file name under devcluster/schemas/
    categories: tuple[str, ...] = ()
    top_fields: tuple[str, ...] = ()  # top-level fields besides apiVersion/kind/metadata/spec

    @property
    def key(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def is_app(self) -> bool:
        return bool(self.prefix)

    @property
    def group_resource(self) -> str:
        """`vminstances.apps.cozystack.io` as Kubernetes messages spell it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


NAMESPACES = Resource("", "v1", "namespaces", "namespace", "Namespace", False, READ, ("ns",))
NODES = Resource(
    "", "v1", "nodes", "node", "Node", False, ("get", "list", "patch", "watch"), ("no",)
)
PODS = Resource("", "v1", "pods", "pod", "Pod", True, READ, ("po",), categories=("all",))
EVENTS = Resource("", "v1", "events", "event", "Event", True, READ, ("ev",))
# What the apps' charts render for connecting: a VM's Service (its external address) and a tenant
# cluster's admin kubeconfig Secret; tenants read them by name (see rbac.py).
SERVICES = Resource("", "v1", "services", "service", "Service", True, READ, ("svc",))
SECRETS = Resource("", "v1", "secrets", "secret", "Secret", True, READ)
# A tenant's quota (the v1.1 tenant chart's `tenant-quota`, or one an admin makes): enforced on
# the virt-launcher pods' requests (devcluster/quota.py).
RESOURCEQUOTAS = Resource(
    "", "v1", "resourcequotas", "resourcequota", "ResourceQuota", True, WRITE, ("quota",)
)
KUBEVIRT_VMS = Resource(
    "kubevirt.io",
    "v1",
    "virtualmachines",
    "virtualmachine",
    "VirtualMachine",
    True,
    READ,
    ("vm", "vms"),
    categories=("all",),
)
WORKLOAD_MONITORS = Resource(
    "cozystack.io", "v1alpha1", "workloadmonitors", "workloadmonitor", "WorkloadMonitor", True, READ
)

# What the charts look up at render time and the portal offers in its forms: cluster-scoped
# KubeVirt instance types and preferences (cozystack v1.1 packages/system/kubevirt-instancetypes),
# CDI DataVolumes (golden images `vm-image-*` in `cozy-public`), StorageClasses. Admins write them.
CATALOGUE = ("create", "delete", "get", "list", "patch", "update", "watch")
INSTANCETYPES = Resource(
    "instancetype.kubevirt.io",
    "v1beta1",
    "virtualmachineclusterinstancetypes",
    "virtualmachineclusterinstancetype",
    "VirtualMachineClusterInstancetype",
    False,
    CATALOGUE,
    ("vmclusterinstancetype", "vmcit", "vmcits"),
)
PREFERENCES = Resource(
    "instancetype.kubevirt.io",
    "v1beta1",
    "virtualmachineclusterpreferences",
    "virtualmachineclusterpreference",
    "VirtualMachineClusterPreference",
    False,
    CATALOGUE,
    ("vmclusterpref", "vmcps", "vmcp"),
)
DATAVOLUMES = Resource(
    "cdi.kubevirt.io",
    "v1beta1",
    "datavolumes",
    "datavolume",
    "DataVolume",
    True,
    CATALOGUE,
    ("dv", "dvs"),
    categories=("all",),
)
STORAGECLASSES = Resource(
    "storage.k8s.io",
    "v1",
    "storageclasses",
    "storageclass",
    "StorageClass",
    False,
    CATALOGUE,
    ("sc",),
    top_fields=(
        "provisioner",
        "parameters",
        "reclaimPolicy",
        "volumeBindingMode",
        "allowVolumeExpansion",
        "mountOptions",
        "allowedTopologies",
    ),
)

VMINSTANCES = Resource(
    APPS_GROUP,
    "v1alpha1",
    "vminstances",
    "vminstance",
    "VMInstance",
    True,
    WRITE,
    prefix="vm-instance-",
    schema="vminstance.v1.1.0.json",
)
VMDISKS = Resource(
    APPS_GROUP,
    "v1alpha1",
    "vmdisks",
    "vmdisk",
    "VMDisk",
    True,
    WRITE,
    prefix="vm-disk-",
    schema="vmdisk.v1.1.0.json",
)
KUBERNETESES = Resource(
    APPS_GROUP,
    "v1alpha1",
    "kuberneteses",
    "kubernetes",
    "Kubernetes",
    True,
    WRITE,
    prefix="kubernetes-",
    schema="kubernetes.v1.1.0.json",
)
# Cozystack v1.4+: the same kind, validated by the newer chart (diskSize, not ephemeralStorage).
KUBERNETESES_HEAD = replace(KUBERNETESES, schema="kubernetes.v1.6-head.json")
LEGACY_VMS = Resource(
    APPS_GROUP,
    "v1alpha1",
    "virtualmachines",
    "virtualmachine",
    "VirtualMachine",
    True,
    WRITE,
    prefix="virtual-machine-",
    schema="virtualmachine.legacy.json",
)

FLAVOURS = ("current", "legacy", "head")


def resources_for(flavour: str) -> list[Resource]:
    """Served resources; `head` = Cozystack v1.4+ Kubernetes schema (nodeGroups[].diskSize)."""
    base = [
        NAMESPACES,
        NODES,
        PODS,
        EVENTS,
        SERVICES,
        SECRETS,
        RESOURCEQUOTAS,
        KUBEVIRT_VMS,
        WORKLOAD_MONITORS,
        INSTANCETYPES,
        PREFERENCES,
        DATAVOLUMES,
        STORAGECLASSES,
    ]
    if flavour == "current":
        return [*base, VMINSTANCES, VMDISKS, KUBERNETESES]
    if flavour == "head":
        return [*base, VMINSTANCES, VMDISKS, KUBERNETESES_HEAD]
    if flavour == "legacy":
        return [*base, LEGACY_VMS, KUBERNETESES]
    raise ValueError(f"unknown flavour {flavour!r} (expected one of {FLAVOURS})")
