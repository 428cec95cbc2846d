"""The guest agent's cloud-init, shared by the VM form (provisioning: offered at creation, since
cloud-init runs once, at first boot) and the utilization pages (a token for a running VM).

Passthrough GPUs have no host telemetry (the host binds them to vfio-pci and runs no driver),
so a small script in the VM posts ``nvidia-smi`` readings every minute. A token made at creation
cannot be a row yet (the VM is not in the snapshot): it is signed, names the VM by (cluster,
namespace, name), and becomes the VM's token row the first time it posts
(``gpus.utilization.agent.authenticate``).
"""

from __future__ import annotations

import secrets
from typing import Any

import yaml
from django.conf import settings
from django.core import signing

TOKEN_PREFIX = "hkga_"  # noqa: S105 - a public prefix, not a secret
_SALT = "hikube-portal.guest-agent.creation"
# The nvidia-smi fields the agent sends, in order (nvidia-smi --help-query-gpu). The clock
# event reasons are ``clocks_event_reasons.*`` since driver 535 (``clocks_throttle_reasons`` is
# their deprecated alias).
QUERY = (
    "uuid",
    "index",
    "name",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "clocks.sm",
    "clocks.mem",
    "clocks_event_reasons.active",
)

AGENT_SCRIPT = """#!/bin/sh
# Hikube portal GPU agent: posts nvidia-smi readings (this VM's GPUs have no host telemetry).
set -eu
. /etc/hikube-gpu-agent.env
nvidia-smi --query-gpu={query} --format=csv,noheader,nounits > /run/hikube-gpu-agent.csv
curl -fsS --max-time 10 -X POST -H "Authorization: Bearer $TOKEN" \\
  -H "Content-Type: text/csv" --data-binary @/run/hikube-gpu-agent.csv "$URL"
"""


def cloud_init_snippet(token: str, url: str | None = None, interval: int = 60) -> str:
    """cloud-config lines for a GPU VM: the agent script, its token (root-only file) and a
    systemd timer. Merge into the VM's cloud-init user data."""
    url = url or settings.METRICS_AGENT_URL
    interval = max(interval, int(settings.METRICS_AGENT_MIN_INTERVAL))
    script = AGENT_SCRIPT.format(query=",".join(QUERY))
    indent = "      "
    body = "\n".join(indent + line if line else "" for line in script.splitlines())
    return f"""#cloud-config
write_files:
  - path: /etc/hikube-gpu-agent.env
    permissions: "0600"
    content: |
      TOKEN={token}
      URL={url}
  - path: /usr/local/bin/hikube-gpu-agent
    permissions: "0755"
    content: |
{body}
  - path: /etc/systemd/system/hikube-gpu-agent.service
    content: |
      [Unit]
      Description=Hikube portal GPU agent (one post)
      [Service]
      Type=oneshot
      ExecStart=/usr/local/bin/hikube-gpu-agent
  - path: /etc/systemd/system/hikube-gpu-agent.timer
    content: |
      [Unit]
      Description=Hikube portal GPU agent every {interval} s
      [Timer]
      OnBootSec=60
      OnUnitActiveSec={interval}
      [Install]
      WantedBy=timers.target
runcmd:
  - [systemctl, daemon-reload]
  - [systemctl, enable, --now, hikube-gpu-agent.timer]
"""


def creation_token(cluster_id: int, namespace: str, name: str) -> str:
    """A token for a VM not created yet: signed, naming the VM; unique (a random nonce)."""
    payload = [secrets.token_urlsafe(12), int(cluster_id), namespace, name]
    return TOKEN_PREFIX + signing.dumps(payload, salt=_SALT, compress=False)


def read_creation_token(token: str) -> tuple[int, str, str] | None:
    """(cluster id, namespace, VM name) of a genuine creation token, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    try:
        payload = signing.loads(token[len(TOKEN_PREFIX) :], salt=_SALT)
    except signing.BadSignature:
        return None
    if not (isinstance(payload, list) and len(payload) == 4):
        return None
    _nonce, cluster_id, namespace, name = payload
    if not (isinstance(cluster_id, int) and isinstance(namespace, str) and isinstance(name, str)):
        return None
    return cluster_id, namespace, name


def merge_cloud_init(base: str, extra: str) -> str:
    """``base`` (a #cloud-config document or "") with ``extra``'s write_files and runcmd
    appended (cloud-init would otherwise take only one document)."""
    if not base.strip():
        return extra
    data: dict[str, Any] = yaml.safe_load(base) or {}
    more: dict[str, Any] = yaml.safe_load(extra) or {}
    for key in ("write_files", "runcmd"):
        if more.get(key):
            data[key] = list(data.get(key) or []) + list(more[key])
    return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False)
