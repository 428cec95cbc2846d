"""deploy/: every overlay renders with the real kubectl (kustomize, offline), every object is
valid against the Kubernetes schemas, the pods are non-root and read-only with probes at the
portal's real URLs, the RBAC grants no wildcard and impersonates only names it lists, and the
rendered configuration passes ``manage.py check --deploy``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.urls import resolve

from gpus.ops.middleware import OPS_VIEWS

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "deploy" / "overlays").iterdir() if p.is_dir())
# Hikube's Cozystack v1.1 runs Kubernetes 1.33; the schemas of that release judge the objects.
KUBERNETES_VERSION = "1.33.0"
CUSTOM_KINDS = {"VMServiceScrape"}  # a CRD: no upstream schema; its fields are checked below
WORKLOADS = {"Deployment", "Job"}


def kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"
    return str(found) if found.exists() else shutil.which("kubectl") or "kubectl"


def render(overlay: str) -> list[dict]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> list[dict]:
    return render(request.param)


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in WORKLOADS
    ]


def test_there_are_overlays_for_hikube_and_staging():
    assert {"hikube", "staging"} <= set(OVERLAYS)


def test_every_object_is_valid_against_the_kubernetes_schemas(objects):
    kinds = {o["kind"] for o in objects}
    assert {
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
        "RoleBinding", "ConfigMap", "Deployment", "Job", "Service", "Ingress",
        "PodDisruptionBudget", "HorizontalPodAutoscaler", "VMServiceScrape",
    } <= kinds  # fmt: skip
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        # strict: a misspelt or misplaced field is an error, not silently dropped.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_an_invalid_object_is_caught():
    """The validator does judge: a Deployment with a misspelt field fails."""
    broken = render(OVERLAYS[0])
    web = named(broken, "Deployment", "hikube-portal-web")
    web["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES_VERSION, strict=True)


def test_web_worker_beat_and_migrations(objects):
    web = named(objects, "Deployment", "hikube-portal-web")
    worker = named(objects, "Deployment", "hikube-portal-worker")
    beat = named(objects, "Deployment", "hikube-portal-beat")
    job = named(objects, "Job", "hikube-portal-migrate")
    command = lambda obj: " ".join(obj["spec"]["template"]["spec"]["containers"][0]["command"])  # noqa: E731
    assert command(web).startswith("gunicorn -c python:hikube_portal.gunicorn_conf")
    assert "celery -A hikube_portal worker" in command(worker)
    assert "celery -A hikube_portal beat" in command(beat)
    assert "manage.py migrate" in command(job) and "register_cluster" in command(job)
    # The HPAs own the web and worker counts; beat is one, never two at once.
    assert "replicas" not in web["spec"] and "replicas" not in worker["spec"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")
    }
    assert targets == {"hikube-portal-web", "hikube-portal-worker"}
    budgets = {
        tuple(sorted(p["spec"]["selector"]["matchLabels"].items()))
        for p in of_kind(objects, "PodDisruptionBudget")
    }
    for deployment in (web, worker):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(set(b) <= set(labels.items()) for b in budgets), deployment["metadata"]["name"]
    service = named(objects, "Service", "hikube-portal")
    assert set(service["spec"]["selector"].items()) <= set(
        web["spec"]["template"]["metadata"]["labels"].items()
    )


def test_containers_are_non_root_read_only_and_sized(objects):
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "the image must not run as root"
    image_uid = int(users[-1].split(":")[0])
    for name, spec in pod_specs(objects):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == image_uid, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where
            # What it writes (VAR_DIR, /tmp) are emptyDirs; the rest is the read-only image.
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert "emptyDir" in mounts["/tmp"] and "emptyDir" in mounts["/var/lib/portal"], where
            assert container["image"].startswith("ghcr.io/hikube/hikube-portal:"), where


def test_probes_point_at_the_portals_real_urls(objects):
    web = named(objects, "Deployment", "hikube-portal-web")["spec"]["template"]["spec"]
    (container,) = web["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    served = {path: view for path, (_label, view) in OPS_VIEWS.items()}
    for probe, expected in (
        ("livenessProbe", "/livez"),
        ("startupProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == expected and get["port"] in ports
        # Answered by the middleware (any Host, plain HTTP), and in the URLconf.
        assert get["path"] in served
        assert resolve(get["path"]).func is served[get["path"]]
    gunicorn_port = 8000  # hikube_portal/gunicorn_conf.py's bind
    assert ports["http"] == gunicorn_port
    (scrape,) = of_kind(objects, "VMServiceScrape")
    (endpoint,) = scrape["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics" and "/metrics" in served
    token = endpoint["bearerTokenSecret"]
    assert token == {"name": "hikube-portal", "key": "PORTAL_METRICS_TOKEN"}
    assert set(scrape["spec"]["selector"]["matchLabels"].items()) <= set(
        named(objects, "Deployment", "hikube-portal-web")["spec"]["template"]["metadata"][
            "labels"
        ].items()
    )
    worker = named(objects, "Deployment", "hikube-portal-worker")["spec"]["template"]["spec"]
    ping = " ".join(worker["containers"][0]["livenessProbe"]["exec"]["command"])
    assert "celery -A hikube_portal inspect ping -d celery@$HOSTNAME" in ping


def test_secrets_are_referenced_never_written(objects):
    assert of_kind(objects, "Secret") == []
    (config,) = of_kind(objects, "ConfigMap")
    secretish = re.compile(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|BROKER|BACKEND|CACHE_URL")
    assert [k for k in config["data"] if secretish.search(k)] == []
    refs = {}
    for _name, spec in pod_specs(objects):
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                if "valueFrom" in env:
                    ref = env["valueFrom"]["secretKeyRef"]
                    refs[env["name"]] = (ref["name"], ref["key"], ref.get("optional", False))
    assert refs["SECRET_KEY"] == ("hikube-portal", "SECRET_KEY", False)
    assert refs["DATABASE_URL"] == ("hikube-portal", "DATABASE_URL", False)
    assert refs["PORTAL_METRICS_TOKEN"] == ("hikube-portal", "PORTAL_METRICS_TOKEN", False)
    assert refs["OIDC_CLIENT_SECRET"] == ("hikube-portal", "OIDC_CLIENT_SECRET", False)
    for name in ("METRICS_BEARER_TOKEN", "METRICS_USERNAME", "METRICS_PASSWORD"):
        assert refs[name] == ("hikube-portal-metric-source", name, True)


def test_only_the_worker_holds_a_cluster_credential(objects):
    specs = dict(pod_specs(objects))
    for name, spec in specs.items():
        if name == "hikube-portal-worker":
            assert spec["serviceAccountName"] == "hikube-portal"
            assert spec.get("automountServiceAccountToken", True) is True
        else:
            assert spec["serviceAccountName"] == "hikube-portal-web", name
            assert spec["automountServiceAccountToken"] is False, name
    bound = {
        (s["kind"], s["name"], s["namespace"])
        for b in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding")
        for s in b["subjects"]
    }
    worker = named(objects, "Deployment", "hikube-portal-worker")
    assert bound == {("ServiceAccount", "hikube-portal", worker["metadata"]["namespace"])}


def test_the_cluster_roles_grant_no_wildcard_and_impersonate_only_listed_names(objects):
    roles = of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
    impersonated: dict[str, set[str]] = {}
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in value for value in rule.get(field, [])), (role, rule)
            if "impersonate" in rule["verbs"]:
                assert rule["verbs"] == ["impersonate"]
                assert rule.get("resourceNames"), f"unrestricted impersonation: {rule}"
                assert set(rule["resources"]) <= {"users", "groups"}, rule
                for resource in rule["resources"]:
                    impersonated.setdefault(resource, set()).update(rule["resourceNames"])
            # Never secrets, never RBAC itself, never escalate or bind.
            assert not {"secrets", "clusterroles", "roles", "clusterrolebindings"} & set(
                rule["resources"]
            ), rule
            assert not {"escalate", "bind"} & set(rule["verbs"]), rule
    assert impersonated["users"] and all(
        u.startswith("hikube-portal:") for u in impersonated["users"]
    )
    tenant_group = re.compile(r"^tenant-[a-z0-9-]+-(view|use|admin|super-admin)$")
    assert impersonated["groups"] and all(tenant_group.match(g) for g in impersonated["groups"])
    assert "system:masters" not in impersonated["groups"]
    portal = named(objects, "ClusterRole", "hikube-portal")
    writes = [r for r in portal["rules"] if {"create", "patch", "delete"} & set(r["verbs"])]
    assert writes and all(r["apiGroups"] == ["apps.cozystack.io"] for r in writes)


def test_the_calls_gpus_kube_makes_are_all_granted(objects):
    """Each (group, resource, verb) the worker uses, read off gpus/kube, has a rule."""
    needed = {
        ("", "nodes", "list"),
        ("", "pods", "list"),
        ("", "events", "list"),
        ("", "namespaces", "list"),
        ("kubevirt.io", "virtualmachines", "list"),
        ("cozystack.io", "workloadmonitors", "list"),
        *(
            ("apps.cozystack.io", plural, verb)
            for plural in ("vminstances", "vmdisks", "kuberneteses", "virtualmachines")
            for verb in ("get", "list", "create", "patch", "delete")
        ),
    }
    granted = {
        (group, resource, verb)
        for rule in named(objects, "ClusterRole", "hikube-portal")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert needed <= granted, needed - granted


def test_the_rendered_configuration_passes_check_deploy(tmp_path):
    """The ConfigMap of each overlay, with stand-ins for the Secret, is a clean production
    configuration (and names no setting the portal does not read)."""
    settings_text = (ROOT / "hikube_portal" / "settings.py").read_text()
    known = set(re.findall(r'env_(?:str|bool|int|float|list)\("([A-Z_]+)"', settings_text))
    for overlay in OVERLAYS:
        (config,) = of_kind(render(overlay), "ConfigMap")
        assert set(config["data"]) <= known, set(config["data"]) - known
        # On a platform people sign in with its Keycloak only (no local passwords).
        assert config["data"]["LOCAL_LOGIN"] == "false"
        assert config["data"]["OIDC_ISSUER"].endswith("hikube.cloud/realms/cozy")
        dropped = {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"}
        env = {
            k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("TEST_")
        }
        env |= config["data"] | {
            "SECRET_KEY": "x7Jq2v9LmP4rT8wZ1nB6cY3kH5dF0gS-aE_uR9tQ2pLo7Vi3Xb",
            "VAR_DIR": str(tmp_path / overlay),
            "PORTAL_METRICS_TOKEN": "t" * 32,
        }
        result = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, overlay + result.stdout + result.stderr
        assert "no issues" in result.stdout
