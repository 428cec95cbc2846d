"""Cozystack's tenant groups: ``<namespace>-view|use|admin|super-admin`` and what they reach.

cozystack v1.1.0: the tenant chart (packages/apps/tenant/templates/tenant.yaml) binds, in each
tenant namespace N, the ClusterRoles ``cozy:tenant:<level>`` to the groups that cozy-lib's
``subjectsForTenantAndAccessLevel`` lists (packages/library/cozy-lib/templates/_rbac.tpl): every
level at or above ``<level>`` (view < use < admin < super-admin) for N, each parent tenant of N
(``tenant-a-b`` -> ``tenant-a``) and ``tenant-root``. Keycloak holds the same four groups per
tenant (packages/apps/tenant/templates/keycloakgroups.yaml). Plain Python, no Django.
"""

from __future__ import annotations

from collections.abc import Iterable

from gpus.kube.client import TENANT_ROLES

LEVEL = {role: i for i, role in enumerate(TENANT_ROLES)}  # view 0, use 1, admin 2, super-admin 3


def parse_group(group: str) -> tuple[str, str] | None:
    """``tenant-acme-super-admin`` -> (``tenant-acme``, ``super-admin``); None otherwise.

    A leading ``/`` (Keycloak's full group path) is dropped.
    """
    group = group.lstrip("/")
    for role in sorted(TENANT_ROLES, key=len, reverse=True):  # -super-admin before -admin
        if group.endswith("-" + role):
            namespace = group[: -len(role) - 1]
            if namespace.startswith("tenant-") and len(namespace) > len("tenant-"):
                return namespace, role
            return None
    return None


def tenant_groups_of(groups: Iterable[str]) -> list[str]:
    """Only the tenant groups, normalised, sorted, once each."""
    return sorted({f"{ns}-{role}" for g in groups if (p := parse_group(g)) for ns, role in [p]})


def parents_and_self(namespace: str) -> list[str]:
    """cozy-lib ``allParentTenantsAndThis``: tenant-a-b -> tenant-a, tenant-a-b, tenant-root."""
    parts = namespace.split("-")
    tenants = ["-".join(parts[:i]) for i in range(2, len(parts) + 1)]
    if namespace != "tenant-root":
        tenants.append("tenant-root")
    return tenants


def role_in(groups: Iterable[str], namespace: str) -> str | None:
    """The highest tenant role ``groups`` give in ``namespace`` (parent tenants count)."""
    reach = set(parents_and_self(namespace))
    best: str | None = None
    for g in groups:
        parsed = parse_group(g)
        if parsed and parsed[0] in reach and (best is None or LEVEL[parsed[1]] > LEVEL[best]):
            best = parsed[1]
    return best


def roles_by_namespace(groups: Iterable[str], namespaces: Iterable[str]) -> dict[str, str]:
    """For each known tenant namespace, the role the groups give there (absent: none)."""
    groups = list(groups)
    return {ns: role for ns in namespaces if (role := role_in(groups, ns))}
