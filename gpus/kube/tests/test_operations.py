"""Pure parts of gpus.kube.operations: reading Cozystack v1.1's answers (no Django, no cluster)."""

from __future__ import annotations

from gpus.kube.errors import ConflictError, TransientError
from gpus.kube.operations import (
    NamespaceView,
    _contains,
    as_conflict,
    helm_causes,
    released_marker,
    vm_progress,
)


def _app(ready: str, reason: str, message: str = "", t: str = "2026-01-01T00:00:00Z") -> dict:
    return {
        "metadata": {"name": "gpu-ws", "namespace": "tenant-acme"},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": t,
                },
                {
                    "type": "Released",
                    "status": ready,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": t,
                },
            ]
        },
    }


def _kv(printable: str, message: str = "") -> dict:
    conds = []
    if printable == "ErrorUnschedulable":
        conds.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        )
    return {
        "status": {
            "printableStatus": printable,
            "ready": printable == "Running",
            "conditions": conds,
        }
    }


def test_500_wrapping_already_exists_is_a_conflict():
    exc = TransientError(
        "internal error",
        500,
        "",
        'failed to create HelmRelease: helmreleases "vm-instance-a" already exists',
    )
    err = as_conflict(exc)
    assert isinstance(err, ConflictError) and err.already_exists


def test_500_wrapping_modified_is_a_conflict_and_others_stay_transient():
    modified = TransientError(
        "x", 500, "", "Operation cannot be fulfilled: the object has been modified; please apply"
    )
    assert isinstance(as_conflict(modified), ConflictError)
    assert not as_conflict(modified).already_exists
    other = TransientError("x", 500, "", "etcdserver: request timed out")
    assert as_conflict(other) is other


def test_helm_schema_message_names_the_fields():
    message = (
        "Helm install failed for release tenant-acme/vm-instance-a with chart vm-instance@1.1.0: "
        "values don't meet the specifications of the schema(s) in the following chart(s):\n"
        "vm-instance:\n- at '/runStrategy': value must be one of 'Always', 'Halted'\n"
        "- at '/gpus/0': missing property 'name'"
    )
    fields = [c.field for c in helm_causes(message)]
    assert fields == ["spec.runStrategy", "spec.gpus.0"]


def test_merge_patch_that_changes_nothing_is_detected():
    current = {"spec": {"a": 1, "b": {"c": [1, 2], "d": "x"}}, "metadata": {"labels": {"k": "v"}}}
    assert _contains(current, {"spec": {"b": {"c": [1, 2]}}})
    assert not _contains(current, {"spec": {"b": {"c": [1]}}})
    assert not _contains(current, {"spec": {"a": None}})  # null deletes a key that is there


def test_absent_app_is_pending_not_failed():
    progress = vm_progress("VMInstance", "gpu-ws", NamespaceView(), "gpu-ws-system", {})
    assert not progress.exists and not progress.failed and not progress.done


def test_install_failed_is_a_failure_with_helms_message():
    view = NamespaceView(
        apps={
            ("vminstances", "gpu-ws"): _app(
                "False",
                "InstallFailed",
                "Helm install failed ... - at '/externalMethod': value must be",
            )
        }
    )
    progress = vm_progress("VMInstance", "gpu-ws", view, None, {})
    assert progress.failed and progress.reason == "InstallFailed"
    assert progress.causes[0].field == "spec.externalMethod"


def test_running_needs_ready_app_and_kubevirt_running():
    view = NamespaceView(
        apps={("vminstances", "gpu-ws"): _app("True", "InstallSucceeded")},
        kubevirt={"vm-instance-gpu-ws": _kv("Starting")},
    )
    assert not vm_progress("VMInstance", "gpu-ws", view, None, {}).done
    view.kubevirt["vm-instance-gpu-ws"] = _kv("Running")
    progress = vm_progress("VMInstance", "gpu-ws", view, None, {})
    assert progress.done and progress.scheduled and progress.running


def test_update_is_done_only_when_released_moves():
    before = _app("True", "InstallSucceeded", "release v1")
    baseline = released_marker(before)
    view = NamespaceView(
        apps={("vminstances", "gpu-ws"): before}, kubevirt={"vm-instance-gpu-ws": _kv("Running")}
    )
    # No generation in v1.1: right after the patch the app still shows the old Ready=True.
    assert not vm_progress("VMInstance", "gpu-ws", view, None, baseline).done
    view.apps[("vminstances", "gpu-ws")] = _app(
        "True", "UpgradeSucceeded", "release v2", "2026-01-01T00:05:00Z"
    )
    assert vm_progress("VMInstance", "gpu-ws", view, None, baseline).done


def test_unschedulable_is_reported_with_the_scheduler_message():
    msg = "0/9 nodes are available: 7 Insufficient nvidia.com/H100_94GB."
    view = NamespaceView(
        apps={("vminstances", "gpu-ws"): _app("True", "InstallSucceeded")},
        kubevirt={"vm-instance-gpu-ws": _kv("ErrorUnschedulable", msg)},
    )
    progress = vm_progress("VMInstance", "gpu-ws", view, None, {})
    assert progress.unschedulable and not progress.done and msg in progress.message


def test_stop_is_done_when_stopped():
    view = NamespaceView(
        apps={("vminstances", "gpu-ws"): _app("True", "InstallSucceeded")},
        kubevirt={"vm-instance-gpu-ws": _kv("Stopping")},
    )
    assert not vm_progress("VMInstance", "gpu-ws", view, None, {}, want_running=False).done
    view.kubevirt["vm-instance-gpu-ws"] = _kv("Stopped")
    assert vm_progress("VMInstance", "gpu-ws", view, None, {}, want_running=False).done


def test_a_retry_waits_for_helm_instead_of_failing_on_the_old_failure():
    failed = _app("False", "UpgradeFailed", "Helm upgrade failed ... - at '/gpus/0/name': bad")
    baseline = released_marker(failed)
    view = NamespaceView(apps={("vminstances", "gpu-ws"): failed})
    assert not vm_progress("VMInstance", "gpu-ws", view, None, baseline).failed
    view.apps[("vminstances", "gpu-ws")] = _app(
        "False",
        "UpgradeFailed",
        "Helm upgrade failed again ... - at '/gpus/0/name': bad",
        "2026-01-01T00:09:00Z",
    )
    assert vm_progress("VMInstance", "gpu-ws", view, None, baseline).failed


def test_a_failure_that_may_clear_is_retrying_not_failed():
    """helm-controller retries forever: a disk not there yet, or Helm's wait running out, may
    clear by itself (#16 item 1); an unknown instance type never does."""
    for message in (
        "Helm install failed for release t/vm-instance-a with chart vm-instance@1.1.0: "
        "Specified disk not exists in cluster: a-system",
        "Helm install failed for release t/kubernetes-k with chart kubernetes@1.1.0: "
        "context deadline exceeded",
    ):
        view = NamespaceView(
            apps={("vminstances", "gpu-ws"): _app("False", "InstallFailed", message)}
        )
        progress = vm_progress("VMInstance", "gpu-ws", view, None, {})
        assert progress.retrying and not progress.failed and progress.message == message
    final = "Helm install failed ...: Specified instanceType does not exist in the cluster: u9"
    view = NamespaceView(apps={("vminstances", "gpu-ws"): _app("False", "InstallFailed", final)})
    assert vm_progress("VMInstance", "gpu-ws", view, None, {}).failed


def test_worker_vms_match_the_deployment_label_exactly_not_a_name_prefix():
    """Issue 16 item 5: gpu's workers, never gpu-large's, oldest first; a stuck one is named."""
    from gpus.kube.operations import node_group_progress, worker_vms

    def worker(name: str, deployment: str, printable: str, created: str) -> dict:
        return {
            "metadata": {"name": name, "creationTimestamp": created,
                         "labels": {"cluster.x-k8s.io/cluster-name": "kubernetes-ml"}},
            "spec": {"template": {"metadata": {"labels": {
                "cluster.x-k8s.io/deployment-name": deployment}}}},
            "status": {"printableStatus": printable},
        }  # fmt: skip

    view = NamespaceView(
        apps={("kuberneteses", "ml"): _app("True", "UpgradeSucceeded")},
        kubevirt={
            "a": worker("kubernetes-ml-gpu-abc-1", "kubernetes-ml-gpu", "Running", "T1"),
            "b": worker("kubernetes-ml-gpu-abc-2", "kubernetes-ml-gpu", "ErrorUnschedulable", "T2"),
            "c": worker("kubernetes-ml-gpu-large-x-1", "kubernetes-ml-gpu-large", "Running", "T0"),
        },
    )
    assert [w["metadata"]["name"] for w in worker_vms(view, "kubernetes-ml-gpu")] == [
        "kubernetes-ml-gpu-abc-1",
        "kubernetes-ml-gpu-abc-2",
    ]
    progress = node_group_progress("ml", "gpu", view, 2, {})
    assert progress.unschedulable and progress.reason == "ErrorUnschedulable"
    assert progress.observed["unschedulable_worker"] == 2 and progress.observed["workers"] == 2
    large = node_group_progress("ml", "gpu-large", view, 1, {})
    assert not large.unschedulable
