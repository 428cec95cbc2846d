"""An over-quota node group in headless Chromium, in English and French (issue 20 item 12): the
live check says it as the user types, and submitting it is a plain refusal next to the field."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import GpuWorkload
from gpus.provisioning.models import Operation
from gpus.provisioning.tests.test_provisioning_quota_security import L40S, make_cluster, quota
from gpus.testing import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]

WORDS = {
    "en": {
        "min": "Minimum workers",
        "max": "Maximum workers",
        "group": "Node group name",
        "check": "Check and preview",
        "add": "Add the group",
        "quota": "Your quota allows 2 more NVIDIA L40S.",
        "fit": "2 workers × 1 NVIDIA L40S: 2 more GPUs needed, 5 free in all",
    },
    "fr": {
        "min": "Workers au minimum",
        "max": "Workers au maximum",
        "group": "Nom du groupe de nœuds",
        "check": "Vérifier et prévisualiser",
        "add": "Ajouter le groupe",
        "quota": "Votre quota permet encore 2 NVIDIA L40S.",
        "fit": "2 workers × 1 NVIDIA L40S\u00a0: 2 GPU de plus nécessaires, 5 libres en tout",
    },
}


@pytest.mark.parametrize("language", ["en", "fr"])
def test_an_over_quota_node_group_is_refused_in_plain_words(
    browser, live_server, alice, acme, language
):
    words = WORDS[language]
    cluster = make_cluster({L40S: [4, 1]})
    GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind=WorkloadKind.NODE_GROUP, app_kind="Kubernetes",
        name="ml", node_group="gpu", gpu_model=quota(acme, L40S, 4), gpus_per_instance=1,
        instances=2, max_instances=2, gpus_held=2, state=ResourceState.RUNNING,
    )  # fmt: skip
    context = browser.new_context(locale=language)
    page = context.new_page()
    page.goto(live_server.url + reverse("login"))
    page.locator("#id_username").fill("alice")
    page.locator("#id_password").fill(PASSWORD)
    page.locator("main button[type=submit]").click()
    page.wait_for_url(live_server.url + reverse("gpus:catalog"))
    page.goto(live_server.url + reverse("gpus:node_group_new", args=[acme.namespace]))
    page.wait_for_function(
        "window.htmx && document.querySelector('#node-group-form')['htmx-internal-data']"
    )
    page.locator("#id_cluster_name").select_option("ml")
    page.get_by_label(words["group"]).fill("train")
    page.get_by_label(words["min"]).fill("2")
    page.get_by_label(words["max"]).fill("3")  # 3 × 1 L40S, with 2 of the quota of 4 held
    quota_line = page.locator("#quota.alert-bad")
    quota_line.wait_for()
    assert words["quota"] in quota_line.inner_text()
    assert words["fit"] in page.locator("#fit").inner_text()
    page.get_by_role("button", name=words["check"]).click()
    page.get_by_role("button", name=words["add"]).click()
    error = page.locator("#err-max_replicas .field-error")
    error.wait_for()
    assert error.inner_text() == words["quota"]
    assert re.search(r"/kubernetes/nodegroups/new/$", page.url)
    assert not Operation.objects.exists()
    context.close()
