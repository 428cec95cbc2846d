"""The guest agent of GPU VMs: passthrough GPUs have no host telemetry (the host binds them to
vfio-pci and runs no driver), so a small script in the VM posts `nvidia-smi` readings.

- `issue_token` / `revoke_tokens`: one token per VM, only its SHA-256 kept (shown once).
- `cloud_init_snippet` (gpus.web.guest_agent): the cloud-config part (script + systemd timer),
  offered by the VM form at creation and by the utilization page for a running VM;
- `bind_creation_token`: a token the VM form signed becomes the VM's row on its first post.
- `parse_csv`: the posted body (`nvidia-smi --query-gpu=... --format=csv,noheader,nounits`).
- `ingest`: authenticate, rate-limit, size-cap, check the GPUs are this VM's, store.

A token speaks for one VM and for the GPUs passed through to it only: the inventory knows how
many GPUs of which model the VM holds, and which GPU UUIDs other workloads hold now; a post that
names more GPUs, another model, or another workload's GPU is refused whole (nothing stored, no
owner changed). Samples never grant access (see selectors.device_for).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import secrets
import time

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import GpuWorkload
from gpus.utilization.collector import model_id_for, store
from gpus.utilization.metrics.parse import SENTINEL, Reading
from gpus.utilization.models import AgentToken, GpuDevice
from gpus.web.guest_agent import (
    QUERY,
    TOKEN_PREFIX,
    cloud_init_snippet,
    read_creation_token,
)

__all__ = ["QUERY", "TOKEN_PREFIX", "cloud_init_snippet"]

FIELD_MAP = {
    "utilization.gpu": "util",
    "memory.used": "mem_used",
    "memory.total": "mem_total",
    "temperature.gpu": "temp",
    "power.draw": "power",
    "power.limit": "power_limit",
    "clocks.sm": "sm_clock",
    "clocks.mem": "mem_clock",
    "clocks_event_reasons.active": "throttle",
}
MAX_ROWS = 64  # GPUs per VM, with room
# Another tenant's GPU that a trusted source (the exporters) reported this recently is still
# theirs, even when the inventory has not tied it to a workload yet.
RECENTLY_SEEN = dt.timedelta(minutes=15)


class AgentError(Exception):
    """A refused post: `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(workload: GpuWorkload) -> str:
    """A new token for a VM's agent; earlier ones are revoked. Shown once, stored hashed."""
    revoke_tokens(workload)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    AgentToken.objects.create(workload=workload, prefix=token[:12], token_hash=_hash(token))
    return token


def revoke_tokens(workload: GpuWorkload) -> int:
    return AgentToken.objects.filter(workload=workload, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


def authenticate(token: str) -> AgentToken | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = (
        AgentToken.objects.select_related("workload__tenant", "workload__cluster")
        .filter(token_hash=_hash(token), revoked_at__isnull=True)
        .first()
    )
    if row is None:
        return bind_creation_token(token)
    # Constant-time compare of what we looked up, so a timing side channel tells nothing.
    if not secrets.compare_digest(row.token_hash, _hash(token)):
        return None
    return row


def bind_creation_token(token: str) -> AgentToken | None:
    """A token the VM form put in a new VM's cloud-init (signed, naming the VM): on its first
    post it becomes that VM's token row, once the snapshot shows the VM. Never when the VM has
    had a token row since (issued from the utilization page: it replaces this one) or when this
    one was revoked."""
    target = read_creation_token(token)
    if target is None:
        return None
    digest = _hash(token)
    if AgentToken.objects.filter(token_hash=digest).exists():
        return None  # bound once, then revoked
    cluster_id, namespace, name = target
    vm = GpuWorkload.objects.filter(
        cluster_id=cluster_id, tenant__namespace=namespace, name=name, kind=WorkloadKind.VM
    ).first()
    if vm is None or AgentToken.objects.filter(workload=vm).exists():
        return None
    AgentToken.objects.create(workload=vm, prefix=f"{TOKEN_PREFIX}{digest[:7]}", token_hash=digest)
    return (
        AgentToken.objects.select_related("workload__tenant", "workload__cluster")
        .filter(token_hash=digest)
        .first()
    )


def _number(text: str) -> float | None:
    text = text.strip()
    if not text or text.startswith("[") or text.upper() in ("N/A", "[N/A]"):
        return None  # "[Not Supported]", "[N/A]"
    try:
        value = float(int(text, 16)) if text.lower().startswith("0x") else float(text)
    except ValueError:
        return None
    return None if value != value or abs(value) >= SENTINEL else value  # NaN, sentinels


def _limit(field: str) -> int:
    """The column's length: a longer value is refused (400), never a database error (500)."""
    return GpuDevice._meta.get_field(field).max_length


def parse_csv(body: str, workload: GpuWorkload, now: float) -> list[Reading]:
    """Rows of `nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits`."""
    out = []
    for i, row in enumerate(csv.reader(io.StringIO(body))):
        if not row or not "".join(row).strip():
            continue
        if i >= MAX_ROWS or len(row) < 3:
            raise AgentError(400, "expected one line per GPU: " + ",".join(QUERY))
        cells = [c.strip() for c in row] + [""] * (len(QUERY) - len(row))
        uuid, index, model_name = cells[0], cells[1], cells[2]
        if not uuid.startswith("GPU-"):
            raise AgentError(400, f"line {i + 1}: the first field must be the GPU UUID")
        if len(uuid) > _limit("uuid"):
            raise AgentError(
                400, f"line {i + 1}: a GPU UUID has at most {_limit('uuid')} characters"
            )
        if len(model_name) > _limit("model_name"):
            raise AgentError(
                400, f"line {i + 1}: a GPU name has at most {_limit('model_name')} characters"
            )
        # nvidia-smi numbers GPUs 0, 1, ...: ASCII digits only ("²".isdigit() is true too).
        if index and not (index.isascii() and index.isdigit() and int(index) < MAX_ROWS):
            raise AgentError(
                400, f"line {i + 1}: the GPU index must be a number from 0 to {MAX_ROWS - 1}"
            )
        values = {}
        for name, cell in zip(QUERY[3:], cells[3 : len(QUERY)], strict=False):
            v = _number(cell)
            if v is not None:
                values[FIELD_MAP[name]] = v
        out.append(
            Reading(
                uuid=uuid,
                ts=now,
                values=values,
                model_name=model_name,
                hostname=workload.name,
                index=int(index) if index else None,
                tenant=workload.tenant.namespace,
                vm=workload.name,
                source="guest-agent",
            )
        )
    if not out:
        raise AgentError(400, "no GPU lines in the body")
    return out


def claim_slot(token: AgentToken) -> None:
    """At most one post per METRICS_AGENT_MIN_INTERVAL per token, across web processes: a
    conditional UPDATE only one of two racing posts wins."""
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.METRICS_AGENT_MIN_INTERVAL)
    won = (
        AgentToken.objects.filter(pk=token.pk)
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=cutoff))
        .update(last_used_at=now)
    )
    if not won:
        raise AgentError(429, "too many posts", retry_after=settings.METRICS_AGENT_MIN_INTERVAL)


def ingest(auth_header: str, body: bytes) -> int:
    """Check and store one post; returns the number of GPUs stored."""
    if len(body) > settings.METRICS_AGENT_MAX_BYTES:
        raise AgentError(413, f"body larger than {settings.METRICS_AGENT_MAX_BYTES} bytes")
    scheme, _, token = auth_header.partition(" ")
    row = authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if row is None:
        raise AgentError(401, "unknown or revoked token")
    claim_slot(row)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AgentError(400, "the body must be UTF-8 text") from exc
    readings = parse_csv(text, row.workload, time.time())
    check_own_gpus(row.workload, readings)
    return store(readings, row.workload.cluster_id)


def check_own_gpus(vm: GpuWorkload, readings: list[Reading]) -> None:
    """Refuse (403) a post for GPUs that are not passed through to the token's VM as the
    inventory knows it: more GPUs than it holds, another model, or a GPU that another workload
    holds now (or another tenant's, seen lately)."""
    uuids = {r.uuid for r in readings}
    if vm.gpus_held <= 0:
        raise AgentError(403, f"the inventory shows no GPU passed through to VM {vm.name} now")
    if len(uuids) > vm.gpus_held:
        raise AgentError(
            403,
            f"VM {vm.name} holds {vm.gpus_held} GPU(s) in the inventory; "
            f"the post names {len(uuids)}",
        )
    if vm.gpu_model_id is not None:
        for r in readings:
            found = model_id_for(r.model_name) if r.model_name else None
            if found is not None and found != vm.gpu_model_id:
                raise AgentError(
                    403, f"{r.uuid} is a {r.model_name}, not the model VM {vm.name} holds"
                )
    recent = timezone.now() - RECENTLY_SEEN
    devices = GpuDevice.objects.filter(uuid__in=uuids).select_related("workload")
    for d in devices:
        other = d.workload is not None and d.workload_id != vm.pk and d.workload.gpus_held > 0
        other_tenant = (
            d.workload is None
            and d.tenant_id not in (None, vm.tenant_id)
            and d.last_seen_at is not None
            and d.last_seen_at >= recent
        )
        if other or other_tenant:
            raise AgentError(403, f"GPU {d.uuid} is not passed through to VM {vm.name}")
