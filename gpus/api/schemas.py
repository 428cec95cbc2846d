"""What the API takes and gives (its OpenAPI document is built from these)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from ninja import Field, Schema


class GpuModelOut(Schema):
    resource_name: str
    display_name: str
    memory_gb: float | None
    offered: bool
    free: int = Field(description="GPUs free now over all ready, schedulable servers")
    free_on_one_server: int


class TenantOut(Schema):
    namespace: str
    display_name: str
    may_operate: bool


class WorkloadOut(Schema):
    name: str
    kind: str
    node_group: str
    app_kind: str
    gpu_model: str | None
    gpus_per_instance: int
    instances: int
    gpus_held: int
    state: str
    reason: str
    message: str


class OperationOut(Schema):
    id: int
    url: str
    kind: str
    state: str
    terminal: bool
    target: str
    node_group: str
    gpu_model: str | None
    gpu_count: int
    requested_by: str
    reason: str
    explanation: str = Field(description="The cluster's reason in plain words")
    message: str
    created_at: datetime
    finished_at: datetime | None


class VmIn(Schema):
    """A GPU VM as the page's form takes it; a field left out takes the form's default."""

    name: str
    gpu_model: str = Field(description="A GPU resource name, e.g. nvidia.com/H100_94GB")
    gpu_count: int | None = None
    instance_type: str | None = None
    instance_profile: str | None = None
    image: str | None = None
    disk_size_gi: int | None = None
    storage_class: str | None = None
    ssh_keys: list[str] | None = None
    external: str | None = Field(None, description="none, PortList or WholeIP")
    external_ports: list[int] | None = None
    install_driver: bool | None = None
    guest_agent: bool | None = None
    cloud_init: str | None = None
    run_strategy: str | None = None
    queue_until_capacity: bool | None = None


class NodeGroupIn(Schema):
    """A GPU node group as the page's form takes it; a field left out takes its default."""

    cluster_name: str | None = Field(None, description="An existing tenant Kubernetes cluster")
    new_cluster: str | None = Field(None, description="Or the name of a new cluster to create")
    version: str | None = None
    group: str
    min_replicas: int
    max_replicas: int
    instance_type: str | None = None
    disk_size_gi: int | None = None
    gpu_model: str
    gpus_per_node: int | None = None
    ingress: bool | None = None


class ActionIn(Schema):
    action: str = Field(description="start, stop or restart")


class Problem(Schema):
    detail: str
    errors: dict[str, list[str]] = {}


class DeviceOut(Schema):
    uuid: str
    model: str
    node: str
    workload: str | None
    telemetry: bool = Field(description="False: no reading (e.g. a passed-through GPU)")
    at: datetime | None
    util: float | None
    mem_used_mib: float | None
    mem_total_mib: float | None
    power_w: float | None
    temp_c: float | None
    util_avg: float | None = Field(description="Mean utilization (%) over the range")


class UtilizationOut(Schema):
    tenant: str
    range: str
    start: datetime
    end: datetime
    devices: list[DeviceOut]


class CapacityHistoryOut(Schema):
    ts: datetime = Field(description="bucket start (UTC)")
    cluster_name: str
    gpu_model_name: str
    samples: int
    installed: float = Field(description="mean over the bucket")
    allocated: float
    allocated_max: int
    free: float
    free_min: int
    unavailable: float
    queued_max: int = Field(description="most GPUs waiting for capacity at one sync")
    refused: int = Field(description="GPUs refused for lack of capacity in the bucket")


class SpendOut(Schema):
    tenant: str
    cluster: str
    gpu_model: str
    currency: str = Field(description="CHF or EUR; empty for usage before any price list")
    gpu_hours: float
    vcpu_hours: float
    memory_gib_hours: float
    disk_gib_hours: float
    amount: Decimal = Field(description="at the price list in force each day, 2 decimals")


class GpuHoursOut(Schema):
    tenant: str
    cluster: str
    gpu_model: str
    gpu_hours: float
    gpus_max: int
