"""Bearer-token authentication, impersonation and Cozystack-like tenant RBAC.

Rule (also in README): the admin token is cluster-admin and may impersonate. An identity gets
tenant-admin rights in namespace N when one of its groups is `N-admin` or `N-super-admin` (view
rights for `N-view` / `N-use`), or when its user is the tenant's service account
`system:serviceaccount:N:N`; group `system:masters` is cluster-admin. No group named like the
namespace grants anything (cozystack v1.1 apps/tenant/templates/tenant.yaml binds only these
four groups). Tenant admins get KubeVirt VMs with get/list only, no watch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .resources import READ, Resource

ADMIN_USER = "kubernetes-admin"


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()
    cluster_admin: bool = False
    admin_in: frozenset[str] = field(default_factory=frozenset)
    view_in: frozenset[str] = field(default_factory=frozenset)
    super_in: frozenset[str] = field(default_factory=frozenset)


def tenant_user(ns: str) -> str:
    return f"system:serviceaccount:{ns}:{ns}"


class Forbidden(Exception):
    pass


class Authorizer:
    def __init__(
        self,
        admin_token: str,
        tenant_tokens: dict[str, str],
        namespace_exists: Callable[[str], bool],
    ) -> None:
        self.admin_token = admin_token
        self.tenant_tokens = dict(tenant_tokens)
        self._by_token = {tok: ns for ns, tok in tenant_tokens.items()}
        self.namespace_exists = namespace_exists

    def identity_for(self, user: str, groups: tuple[str, ...]) -> Identity:
        if "system:masters" in groups:
            return Identity(user, groups, cluster_admin=True)
        admin, view, sup = set(), set(), set()
        parts = user.split(":")
        is_tenant_sa = len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]
        if is_tenant_sa and parts[2] == parts[3] and self.namespace_exists(parts[2]):
            admin.add(parts[2])
        for g in groups:
            if g.endswith("-super-admin") and self.namespace_exists(g[: -len("-super-admin")]):
                sup.add(g[: -len("-super-admin")])
            for suffix, target in (
                ("-super-admin", admin),
                ("-admin", admin),
                ("-view", view),
                ("-use", view),
            ):
                if g.endswith(suffix) and self.namespace_exists(g[: -len(suffix)]):
                    target.add(g[: -len(suffix)])
                    break
        return Identity(
            user,
            groups,
            admin_in=frozenset(admin),
            view_in=frozenset(view),
            super_in=frozenset(sup),
        )

    def authenticate(self, authorization: str | None) -> Identity | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = authorization[7:].strip()
        if token == self.admin_token:
            return Identity(
                ADMIN_USER, ("system:masters", "system:authenticated"), cluster_admin=True
            )
        ns = self._by_token.get(token)
        if ns is None:
            return None
        return Identity(
            tenant_user(ns),
            (f"system:serviceaccounts:{ns}", "system:serviceaccounts", "system:authenticated"),
            admin_in=frozenset({ns}),
        )

    def impersonate(self, who: Identity, user: str | None, groups: list[str]) -> Identity:
        if not who.cluster_admin:
            what = f'users "{user}"' if user else f'groups "{groups[0]}"'
            kind = "users" if user else "groups"
            raise Forbidden(
                f'{what} is forbidden: User "{who.user}" cannot impersonate resource "{kind}" '
                f'in API group "" at the cluster scope'
            )
        return self.identity_for(user or "", (*tuple(groups), "system:authenticated"))

    @staticmethod
    def allowed(who: Identity, verb: str, res: Resource, ns: str | None) -> bool:
        if who.cluster_admin:
            return True
        if ns is None or not res.namespaced:
            return False  # tenants never get cluster-scope rights (nodes, namespaces, -A lists)
        tenant_readable = res.is_app or res.plural in ("pods", "events", "workloadmonitors")
        if ns in who.admin_in:
            if res.is_app:
                return True
            if tenant_readable:
                return verb in READ
            if res.group == "kubevirt.io" and res.plural == "virtualmachines":
                # cozystack-basics clusterroles.yaml: admin get/list, super-admin '*'.
                return verb in READ if ns in who.super_in else verb in ("get", "list")
            return False
        if ns in who.view_in:
            return tenant_readable and verb in READ
        return False

    @staticmethod
    def forbidden_message(
        who: Identity, verb: str, res: Resource, ns: str | None, name: str | None
    ) -> str:
        subject = f'{res.group_resource} "{name}"' if name else res.group_resource
        scope = f'in the namespace "{ns}"' if ns and res.namespaced else "at the cluster scope"
        return (
            f'{subject} is forbidden: User "{who.user}" cannot {verb} resource "{res.plural}" '
            f'in API group "{res.group}" {scope}'
        )
