"""The portal's least-privilege service account, its impersonation, and Cozystack's tenant roles.

Judged with the real kubernetes client: the portal's token may read the fleet, may impersonate
only ``hikube-portal:<name>`` with tenant groups (never ``system:masters``), and an impersonated
person gets exactly what ``cozy:tenant:view|use|admin|super-admin`` grant (cozystack v1.1.0).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devcluster.rbac import parents_and_self, tenant_group
from devcluster.testing import DevCluster

G, V = "apps.cozystack.io", "v1alpha1"


def portal(dc: DevCluster, user: str | None = None, *groups: str) -> client.CustomObjectsApi:
    api = dc.api_client(token=dc.portal_token)
    if user:
        api.set_default_header("Impersonate-User", user)
    if groups:
        # One header line per group (see gpus/kube/client.py); the generated client sends a
        # joined value for a list, so these tests impersonate one group at a time.
        assert len(groups) == 1
        api.set_default_header("Impersonate-Group", groups[0])
    return client.CustomObjectsApi(api)


def create_disk(api: client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    body = {"apiVersion": f"{G}/{V}", "kind": "VMDisk", "metadata": {"name": name}, "spec": {}}
    return api.create_namespaced_custom_object(G, V, ns, "vmdisks", body)


def refused(exc: pytest.ExceptionInfo[ApiException]) -> str:
    assert exc.value.status == 403
    return json.loads(exc.value.body)["message"]


def test_parent_tenants_as_cozy_lib_computes_them() -> None:
    assert parents_and_self("tenant-abc-def") == ["tenant-abc", "tenant-abc-def", "tenant-root"]
    assert parents_and_self("tenant-root") == ["tenant-root"]
    assert tenant_group("tenant-acme-super-admin") == ("tenant-acme", 3)
    assert tenant_group("tenant-acme-use") == ("tenant-acme", 1)
    assert tenant_group("system:masters") is None
    assert tenant_group("tenant-admin") is None  # "tenant" alone is no tenant


def test_portal_service_account_reads_but_never_writes_in_its_own_name(dc: DevCluster) -> None:
    core = client.CoreV1Api(dc.api_client(token=dc.portal_token))
    assert core.list_node(limit=1).items
    core.list_pod_for_all_namespaces(limit=1)
    core.list_namespace()
    api = portal(dc)
    api.list_cluster_custom_object(G, V, "vminstances")
    with pytest.raises(ApiException) as exc:
        create_disk(api, "tenant-globex", "portal-own-name")
    assert 'User "system:serviceaccount:hikube-portal:hikube-portal" cannot create' in refused(exc)


@pytest.mark.parametrize(
    ("user", "group", "refused_name"),
    [
        ("hikube-portal:alice", "system:masters", "system:masters"),
        ("kubernetes-admin", "tenant-globex-admin", "kubernetes-admin"),  # a bare user name
        ("alice", "tenant-globex-admin", "alice"),
        ("hikube-portal:alice", "system:authenticated", "system:authenticated"),
    ],
)
def test_portal_may_impersonate_only_prefixed_users_and_tenant_groups(
    dc: DevCluster, user: str, group: str, refused_name: str
) -> None:
    with pytest.raises(ApiException) as exc:
        portal(dc, user, group).list_namespaced_custom_object(G, V, "tenant-globex", "vmdisks")
    message = refused(exc)
    assert f'"{refused_name}" is forbidden' in message and "cannot impersonate" in message
    assert json.loads(exc.value.body)["details"]["name"] == refused_name


def test_a_tenant_token_may_not_impersonate_at_all(dc: DevCluster) -> None:
    api = dc.api_client(tenant="tenant-globex")
    api.set_default_header("Impersonate-User", "hikube-portal:alice")
    with pytest.raises(ApiException) as exc:
        client.CustomObjectsApi(api).list_namespaced_custom_object(G, V, "tenant-globex", "vmdisks")
    assert "cannot impersonate" in refused(exc)


def test_view_and_use_read_but_the_cluster_refuses_their_writes(dc: DevCluster) -> None:
    for level in ("view", "use"):
        api = portal(dc, "hikube-portal:vera", f"tenant-globex-{level}")
        api.list_namespaced_custom_object(G, V, "tenant-globex", "vmdisks")  # may look
        with pytest.raises(ApiException) as exc:
            create_disk(api, "tenant-globex", f"by-{level}")
        assert refused(exc) == (
            'vmdisks.apps.cozystack.io is forbidden: User "hikube-portal:vera" cannot create '
            'resource "vmdisks" in API group "apps.cozystack.io" in the namespace "tenant-globex"'
        )


def test_admin_writes_in_its_tenant_and_children_not_in_a_sibling(dc: DevCluster) -> None:
    admin = portal(dc, "hikube-portal:ada", "tenant-globex-admin")
    created = create_disk(admin, "tenant-globex", "by-admin")
    assert created["metadata"]["name"] == "by-admin"
    admin.delete_namespaced_custom_object(G, V, "tenant-globex", "vmdisks", "by-admin")
    with pytest.raises(ApiException) as exc:
        create_disk(admin, "tenant-acme", "not-yours")
    assert 'in the namespace "tenant-acme"' in refused(exc)
    # A parent tenant's group counts in its children (tenant-root is every tenant's parent).
    root = portal(dc, "hikube-portal:rita", "tenant-root-admin")
    create_disk(root, "tenant-acme", "by-root-admin")
    root.delete_namespaced_custom_object(G, V, "tenant-acme", "vmdisks", "by-root-admin")
    # ... but a child's group gives nothing in the parent.
    child = portal(dc, "hikube-portal:carl", "tenant-acme-admin")
    with pytest.raises(ApiException):
        child.list_namespaced_custom_object(G, V, "tenant-root", "vmdisks")
