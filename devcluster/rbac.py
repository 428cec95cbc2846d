"""Bearer-token authentication, impersonation and Cozystack's tenant RBAC.

Rules (also in README, with their sources in cozystack v1.1.0):

* the admin token is ``system:masters``: everything, and may impersonate anyone;
* the portal's service account (``system:serviceaccount:hikube-portal:hikube-portal``) holds the
  portal's least-privilege ClusterRole: it reads what the inventory sync reads and may impersonate
  only users named ``<PORTAL_USER_PREFIX><name>`` and tenant groups ``tenant-...-view|use|admin|
  super-admin``; it never writes in its own name, and impersonating ``system:masters`` or a bare
  user name is a 403;
* an identity's tenant rights come from its groups the way the tenant chart binds them
  (apps/tenant/templates/tenant.yaml with cozy-lib's ``subjectsForTenantAndAccessLevel``): the
  RoleBinding of level L in namespace N lists the groups ``T-L'`` for every L' >= L and every T in
  N, N's parent tenants and ``tenant-root``; so ``tenant-acme-admin`` is admin in ``tenant-acme``
  and in ``tenant-acme-dev``. The level's rights are the ClusterRoles ``cozy:tenant:view|use|admin|
  super-admin`` of cozystack-basics/templates/clusterroles.yaml, cut down to the kinds devcluster
  serves: view and use read the apps, pods, events and WorkloadMonitors (use adds only the KubeVirt
  console/VNC/port-forward subresources: no write on any app); admin may also create, update, patch
  and delete the apps and get/list KubeVirt VMs (no watch); super-admin has ``*`` on both.
* a tenant's own service account ``system:serviceaccount:N:N`` is admin of ``N``; no group named
  like the namespace grants anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .resources import APPS_GROUP, READ, Resource

ADMIN_USER = "kubernetes-admin"
PORTAL_NAMESPACE = "hikube-portal"
PORTAL_USER = f"system:serviceaccount:{PORTAL_NAMESPACE}:hikube-portal"
PORTAL_USER_PREFIX = "hikube-portal:"

# cozy-lib _rbac.tpl accessLevelMap.
LEVELS = {"view": 0, "use": 1, "admin": 2, "super-admin": 3}
VIEW, USE, ADMIN, SUPER_ADMIN = 0, 1, 2, 3
# What the portal's ClusterRole lets it read in its own name (cluster-wide).
PORTAL_READS = {
    ("", "nodes"),
    ("", "namespaces"),
    ("", "pods"),
    ("", "events"),
    ("", "resourcequotas"),
    ("kubevirt.io", "virtualmachines"),
    ("cozystack.io", "workloadmonitors"),
    # The catalogues the forms offer (inventory sync): instance types, preferences, storage
    # classes; golden images only in cozy-public (deploy's Role hikube-portal-golden-images).
    ("instancetype.kubevirt.io", "virtualmachineclusterinstancetypes"),
    ("instancetype.kubevirt.io", "virtualmachineclusterpreferences"),
    ("storage.k8s.io", "storageclasses"),
}
GOLDEN_IMAGES = ("cdi.kubevirt.io", "datavolumes", "cozy-public")


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()
    cluster_admin: bool = False
    portal: bool = False
    # tenant namespace named in a group -> the highest level its groups give (before parents).
    tenant_levels: dict[str, int] = field(default_factory=dict)


def tenant_user(ns: str) -> str:
    return f"system:serviceaccount:{ns}:{ns}"


def parents_and_self(ns: str) -> list[str]:
    """cozy-lib ``allParentTenantsAndThis``: tenant-a-b -> tenant-a, tenant-a-b, tenant-root."""
    parts = ns.split("-")
    tenants = ["-".join(parts[:i]) for i in range(2, len(parts) + 1)]
    if ns != "tenant-root":
        tenants.append("tenant-root")
    return tenants


def tenant_group(group: str) -> tuple[str, int] | None:
    """``tenant-acme-super-admin`` -> (``tenant-acme``, 3); None for any other group."""
    for suffix in ("super-admin", "admin", "use", "view"):  # -super-admin before -admin
        if group.endswith("-" + suffix):
            ns = group[: -len(suffix) - 1]
            if ns.startswith("tenant-") and len(ns) > len("tenant-"):
                return ns, LEVELS[suffix]
            return None
    return None


class Forbidden(Exception):
    pass


class Authorizer:
    def __init__(
        self,
        admin_token: str,
        tenant_tokens: dict[str, str],
        namespace_exists: Callable[[str], bool],
        portal_token: str | None = None,
    ) -> None:
        self.admin_token = admin_token
        self.portal_token = portal_token
        self.tenant_tokens = dict(tenant_tokens)
        self._by_token = {tok: ns for ns, tok in tenant_tokens.items()}
        self.namespace_exists = namespace_exists

    def identity_for(self, user: str, groups: tuple[str, ...]) -> Identity:
        if "system:masters" in groups:
            return Identity(user, groups, cluster_admin=True)
        levels: dict[str, int] = {}
        parts = user.split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"] and parts[2] == parts[3]:
            levels[parts[2]] = ADMIN  # the tenant's own service account
        for g in groups:
            found = tenant_group(g)
            if found:
                ns, level = found
                levels[ns] = max(level, levels.get(ns, -1))
        return Identity(user, groups, tenant_levels=levels)

    def authenticate(self, authorization: str | None) -> Identity | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = authorization[7:].strip()
        if token == self.admin_token:
            return Identity(
                ADMIN_USER, ("system:masters", "system:authenticated"), cluster_admin=True
            )
        if self.portal_token and token == self.portal_token:
            return Identity(
                PORTAL_USER,
                (
                    f"system:serviceaccounts:{PORTAL_NAMESPACE}",
                    "system:serviceaccounts",
                    "system:authenticated",
                ),
                portal=True,
            )
        ns = self._by_token.get(token)
        if ns is None:
            return None
        return Identity(
            tenant_user(ns),
            (f"system:serviceaccounts:{ns}", "system:serviceaccounts", "system:authenticated"),
            tenant_levels={ns: ADMIN},
        )

    @staticmethod
    def may_impersonate(who: Identity, kind: str, name: str) -> bool:
        if who.cluster_admin:
            return True
        if not who.portal:
            return False
        if kind == "users":
            return name.startswith(PORTAL_USER_PREFIX) and len(name) > len(PORTAL_USER_PREFIX)
        return tenant_group(name) is not None

    def impersonate(self, who: Identity, user: str | None, groups: list[str]) -> Identity:
        # The apiserver checks each impersonated name in turn (user first, then each group).
        for kind, name in [("users", user or "")] + [("groups", g) for g in groups]:
            if not self.may_impersonate(who, kind, name):
                raise Forbidden(
                    f'{kind} "{name}" is forbidden: User "{who.user}" cannot impersonate '
                    f'resource "{kind}" in API group "" at the cluster scope',
                    kind,
                    name,
                )
        return self.identity_for(user or "", (*tuple(groups), "system:authenticated"))

    def level_in(self, who: Identity, ns: str) -> int:
        """The highest tenant level ``who`` holds in ``ns`` (-1: none), parents counted."""
        if not who.tenant_levels or not self.namespace_exists(ns):
            return -1
        return max((who.tenant_levels.get(t, -1) for t in parents_and_self(ns)), default=-1)

    def allowed(
        self, who: Identity, verb: str, res: Resource, ns: str | None, name: str | None = None
    ) -> bool:
        if who.cluster_admin:
            return True
        if who.portal:
            # The portal's ClusterRole: read what the sync and the poller read, write nothing.
            readable = res.group == APPS_GROUP or (res.group, res.plural) in PORTAL_READS
            readable = readable or (res.group, res.plural, ns) == GOLDEN_IMAGES
            return readable and verb in READ
        if ns is None or not res.namespaced:
            return False  # tenants never get cluster-scope rights (nodes, namespaces, -A lists)
        level = self.level_in(who, ns)
        if level < 0:
            return False
        if res.is_app:
            if level >= SUPER_ADMIN:
                return True
            if level >= ADMIN:
                return verb in (*READ, "create", "update", "patch", "delete")
            return verb in READ
        if res.plural in ("pods", "events", "workloadmonitors", "resourcequotas"):
            # cozy:tenant:base (aggregated into every level): get/list/watch pods, events,
            # resourcequotas; never a write on a quota (the tenant chart owns it).
            return verb in READ
        if res.group == "" and res.plural in ("services", "secrets"):
            # The apps' `<release>-dashboard-resources` Roles (cozystack v1.1 vm-instance and
            # kubernetes templates/dashboard-resourcemap.yaml) give the "use" level get on the
            # release's Service and on `kubernetes-<name>-admin-kubeconfig`, by name only.
            return level >= USE and verb == "get" and bool(name) and _dashboard_name(res, name)
        if res.group == "kubevirt.io" and res.plural == "virtualmachines":
            # clusterroles.yaml: admin get/list, super-admin '*'.
            if level >= SUPER_ADMIN:
                return verb in READ
            return level >= ADMIN and verb in ("get", "list")
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


def _dashboard_name(res: Resource, name: str) -> bool:
    if res.plural == "secrets":
        return name.startswith("kubernetes-") and name.endswith("-admin-kubeconfig")
    return name.startswith(("vm-instance-", "virtual-machine-", "kubernetes-"))
