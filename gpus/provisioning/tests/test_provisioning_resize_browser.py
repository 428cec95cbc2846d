"""Resizing a node group in headless Chromium, in English and French (issue 16 item 2): only the
maximum changed -> no warning and a patch of maxReplicas alone; a new instance type -> the page
says every worker is replaced and how many spare GPUs that needs, before anything is sent."""

from __future__ import annotations

import pytest
from django.urls import reverse

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import GpuWorkload
from gpus.provisioning.models import Operation
from gpus.provisioning.tests.test_provisioning_quota_security import L40S, make_cluster
from gpus.testing import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]

WORDS = {
    "en": {
        "max": "Maximum workers",
        "itype": "Instance type",
        "check": "Check and preview",
        "resize": "Resize",
        "roll": "Every worker is replaced",
        "spare": "needs up to 2 spare NVIDIA L40S while it runs",
    },
    "fr": {
        "max": "Workers au maximum",
        "itype": "Type d'instance",
        "check": "Vérifier et prévisualiser",
        "resize": "Redimensionner",
        "roll": "Chaque worker est remplacé",
        "spare": "il faut jusqu\u2019à 2 NVIDIA L40S libres pendant l\u2019opération",
    },
}


@pytest.mark.parametrize("language", ["en", "fr"])
def test_a_resize_sends_only_the_maximum_and_warns_before_a_roll(
    browser, live_server, alice, acme, language
):
    words = WORDS[language]
    cluster = make_cluster({L40S: [4, 1]})
    GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind=WorkloadKind.NODE_GROUP, app_kind="Kubernetes",
        name="ml", node_group="gpu", gpu_model=GpuModel.objects.get(resource_name=L40S),
        gpus_per_instance=1, instances=2, max_instances=2, gpus_held=2,
        state=ResourceState.RUNNING,
        group_spec={"min_replicas": 2, "max_replicas": 2, "instance_type": "u1.2xlarge",
                    "disk": "100Gi", "roles": ["ingress-nginx"], "gpus": [L40S]},
    )  # fmt: skip
    context = browser.new_context(locale=language)
    page = context.new_page()
    page.goto(live_server.url + reverse("login"))
    page.locator("#id_username").fill("alice")
    page.locator("#id_password").fill(PASSWORD)
    page.locator("main button[type=submit]").click()
    page.wait_for_url(live_server.url + reverse("gpus:catalog"))
    url = reverse("gpus:node_group_edit", args=[acme.namespace, "ml", "gpu"])
    page.goto(live_server.url + url)
    page.wait_for_function(
        "window.htmx && document.querySelector('#node-group-form')['htmx-internal-data']"
    )
    # A new instance type: the live check says the workers roll, before anything is sent.
    page.get_by_label(words["itype"]).select_option("u1.8xlarge")
    warning = page.locator("#roll-warning")
    warning.wait_for()
    assert words["roll"] in warning.inner_text()
    assert words["spare"] in warning.inner_text()
    # Back to the live instance type, and only the maximum changed: no warning.
    page.get_by_label(words["itype"]).select_option("u1.2xlarge")
    warning.wait_for(state="detached")
    page.get_by_label(words["max"]).fill("3")
    page.locator("#fit").wait_for()
    assert page.locator("#roll-warning").count() == 0
    page.get_by_role("button", name=words["check"]).click()
    preview = page.locator("#preview-yaml")
    preview.wait_for()
    assert "maxReplicas: 3" in preview.inner_text()
    for key in ("instanceType", "ephemeralStorage", "roles", "gpus", "minReplicas"):
        assert key not in preview.inner_text()
    assert page.locator("#roll-warning").count() == 0
    page.get_by_role("button", name=words["resize"]).click()
    page.wait_for_url(f"{live_server.url}/tenants/{acme.namespace}/operations/**")
    op = Operation.objects.get()
    assert op.manifests[0]["spec"] == {"nodeGroups": {"gpu": {"maxReplicas": 3}}}
    assert op.params["rolls"] is False
    context.close()
