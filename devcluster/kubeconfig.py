"""Tokens (deterministic from --seed) and the kubeconfig: admin, portal, one context per tenant."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import yaml


def make_token(seed: int, who: str) -> str:
    return f"dc-{hashlib.sha256(f'devcluster/{seed}/{who}'.encode()).hexdigest()[:40]}"


def kubeconfig(
    url: str,
    admin_token: str,
    tenant_tokens: dict[str, str],
    ca_data: str | None = None,
    portal_token: str | None = None,
) -> dict:
    cluster: dict[str, str] = {"server": url}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    users = [{"name": "admin", "user": {"token": admin_token}}]
    contexts = [{"name": "admin", "context": {"cluster": "devcluster", "user": "admin"}}]
    if portal_token:
        # The portal's own service account (least privilege; writes only by impersonation).
        users.append({"name": "portal", "user": {"token": portal_token}})
        contexts.append({"name": "portal", "context": {"cluster": "devcluster", "user": "portal"}})
    for ns, tok in sorted(tenant_tokens.items()):
        users.append({"name": ns, "user": {"token": tok}})
        contexts.append(
            {"name": ns, "context": {"cluster": "devcluster", "user": ns, "namespace": ns}}
        )
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "devcluster", "cluster": cluster}],
        "users": users,
        "contexts": contexts,
        "current-context": "admin",
    }


def write_kubeconfig(
    path: str | Path,
    url: str,
    admin_token: str,
    tenant_tokens: dict[str, str],
    ca_file: Path | None = None,
    portal_token: str | None = None,
) -> Path:
    """kubectl needs https:// to send tokens (clientcmd reads credentials only for TLS)."""
    ca = base64.b64encode(ca_file.read_bytes()).decode() if ca_file else None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    config = kubeconfig(url, admin_token, tenant_tokens, ca, portal_token)
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.replace(p)
    return p
