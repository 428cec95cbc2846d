"""What a new user stumbled on (#20), in headless Chromium, English and French: the phone
layout, the resize form prefilled with the group's real values, copy buttons."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from gpus.inventory.models import GpuWorkload
from gpus.testing import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]
PHONE = {"width": 390, "height": 844}
# Elements of the page whose text is wider than their box and not in a scrolling box: cut text
# (the stacked tables' headings are hidden on purpose, clipped to 1 px).
CLIPPED = """[...document.querySelectorAll('main *')].filter(e => {
  const style = getComputedStyle(e);
  return e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1 && !e.closest('thead')
    && !['auto', 'scroll'].includes(style.overflowX);
}).map(e => e.tagName + ': ' + e.textContent.trim().slice(0, 60))"""


def _phone_page(browser, live_server, username: str, language: str):
    context = browser.new_context(viewport=PHONE, locale=language)
    page = context.new_page()
    page.goto(live_server.url + reverse("login"))
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("main button[type=submit]").click()
    page.wait_for_url(live_server.url + reverse("gpus:catalog"))
    return context, page


@pytest.mark.parametrize("language", ["en", "fr"])
def test_phone_header_is_short_rows_are_tappable_agent_snippet_copies(
    browser, live_server, snapshot, alice, language
):
    context, page = _phone_page(browser, live_server, "alice", language)
    page.goto(live_server.url + reverse("gpus:my_gpus", args=["tenant-acme"]))
    header = page.locator("header.site-header").bounding_box()
    assert header is not None and header["height"] <= 110, header
    # Every link in a row is a finger-sized target (WCAG 2.5.8: at least 24 px; we give 36).
    links = page.locator("#workloads tbody a")
    assert links.count() >= 2
    for box in (links.nth(i).bounding_box() for i in range(links.count())):
        assert box is not None and box["height"] >= 36, box
    # No text is cut: no cell of the table is wider inside than its box.
    clipped = page.evaluate(CLIPPED)
    assert clipped == []
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # A workload's page (facts, actions, its operations) fits too.
    group = GpuWorkload.objects.get(name="k8s")
    page.goto(live_server.url + reverse("gpus:workload", args=["tenant-acme", group.pk]))
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.evaluate(CLIPPED) == []
    page.goto(live_server.url + reverse("gpus:util_tenant", args=["tenant-acme"]))
    vm = GpuWorkload.objects.get(name="ws")
    page.locator(f"form[action$='/agent/{vm.pk}/'] button").click()
    snippet = page.locator("#cloud-init")
    box = snippet.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    assert snippet.evaluate("e => e.scrollWidth <= e.clientWidth")  # wraps, no sideways scroll
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("[data-copy='#cloud-init']").click()
    assert page.evaluate("navigator.clipboard.readText()") == snippet.text_content()
    context.close()


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx4yH1uQeQ5K3m3sQm7nYyq7bYp1pZ7rj2qj6w8x1y2 me@host"


@pytest.mark.parametrize("language", ["en", "fr"])
def test_live_check_follows_an_out_of_range_count(page, live_server, snapshot, alice, language):
    """Typing 9 GPUs (the form allows 8) says so next to the field and drops the old fit and
    preview: htmx must not stop at the browser's own range check and leave "1 x L40S" shown."""
    page.context.set_extra_http_headers({"Accept-Language": language})
    page.goto(live_server.url + reverse("login"))
    page.locator("#id_username").fill("alice")
    page.locator("#id_password").fill(PASSWORD)
    page.locator("main button[type=submit]").click()
    page.wait_for_url(live_server.url + reverse("gpus:catalog"))
    page.goto(live_server.url + reverse("gpus:vm_new", args=["tenant-acme"]))
    page.wait_for_function(
        "window.htmx && document.querySelector('#vm-form')['htmx-internal-data']"
    )
    page.locator("#id_name").fill("box")
    page.locator("#id_ssh_keys").fill(KEY)
    page.locator("#id_gpu_count").fill("1")
    page.wait_for_function(
        "document.querySelector('#preview-yaml') && "
        "document.querySelector('#preview-yaml').textContent.includes('box')"
    )
    assert page.locator("#fit").count() == 1
    page.locator("#id_gpu_count").fill("9")
    error = page.locator("#err-gpu_count .field-error")
    error.wait_for()
    assert "8" in error.inner_text()
    page.locator("#preview-yaml").wait_for(state="detached")
    assert page.locator("#fit").count() == 0
    # Submitting anyway is refused next to the field, never sent.
    page.locator("#vm-submit").click()
    page.locator("#err-gpu_count .field-error").wait_for()
    assert "/vms/new/" in page.url


@pytest.fixture
def eager_tasks():
    """The live server runs the tasks it sends (the worker's code, in its thread)."""
    import gpus.provisioning.tasks  # noqa: F401 (registers them, as the worker does)
    from hikube_portal.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.mark.integration
@pytest.mark.parametrize("language", ["en", "fr"])
def test_resize_with_real_values_connect_to_a_vm_and_download_a_kubeconfig(
    browser, live_server, alice, acme, tmp_path, register, eager_tasks, language
):
    from devcluster.testing import run_devcluster
    from gpus.provisioning.models import Operation

    with run_devcluster(tmp_path / "dc", speed=200.0) as dc:
        register(dc)
        context = browser.new_context(locale=language, accept_downloads=True)
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()
        page.goto(live_server.url + reverse("login"))
        page.locator("#id_username").fill("alice")
        page.locator("#id_password").fill(PASSWORD)
        page.locator("main button[type=submit]").click()
        page.wait_for_url(live_server.url + reverse("gpus:catalog"))

        # Resize: the form starts from the group as the cluster has it (demo: ml/gpu is
        # 2 to 4 workers of u1.8xlarge with 100Gi), not from guesses.
        page.goto(live_server.url + reverse("gpus:my_gpus", args=["tenant-acme"]))
        page.locator("#workloads a[href$='/kubernetes/ml/nodegroups/gpu/']").click()
        page.wait_for_url(re.compile(r".*/kubernetes/ml/nodegroups/gpu/$"))
        assert page.locator("#id_min_replicas").input_value() == "2"
        assert page.locator("#id_max_replicas").input_value() == "4"
        assert page.locator("#id_instance_type").input_value() == "u1.8xlarge"
        assert page.locator("#id_disk_size_gi").input_value() == "100"
        assert page.locator("#id_new_cluster").count() == 0
        page.locator("#id_max_replicas").fill("5")
        page.locator("#node-group-form button[type=submit]").click()
        preview = page.locator("#preview-yaml").inner_text()
        # Only the changed key is sent (issue 16 item 2): the prefilled values stay as they are.
        assert "maxReplicas: 5" in preview
        assert "instanceType" not in preview and "ephemeralStorage" not in preview
        page.locator("#node-group-submit").click()
        page.wait_for_url(re.compile(r".*/operations/\d+/$"))
        op = Operation.objects.get(name="ml", node_group="gpu", kind="resize")
        assert op.params["instance_type"] == "u1.8xlarge" and op.params["max_replicas"] == 5

        # Connect to a VM: its address and the SSH command, read as alice by a task.
        vm = GpuWorkload.objects.get(tenant=acme, name="gpu-ws")
        page.goto(live_server.url + reverse("gpus:workload", args=["tenant-acme", vm.pk]))
        page.locator("#connect-vm").wait_for()
        ssh = page.locator("#ssh-cmd").inner_text()
        assert re.fullmatch(r"ssh \w+@198\.51\.100\.\d+", ssh), ssh
        page.locator("[data-copy='#ssh-cmd']").click()
        assert page.evaluate("navigator.clipboard.readText()") == ssh

        # Download the cluster's kubeconfig from the node group's page.
        group = GpuWorkload.objects.get(tenant=acme, name="ml", node_group="gpu")
        page.goto(live_server.url + reverse("gpus:workload", args=["tenant-acme", group.pk]))
        page.locator("#connect-ask").click()
        with page.expect_download() as download:
            page.locator("#kubeconfig-download").click()
        assert download.value.suggested_filename == "ml.kubeconfig"
        text = tmp_path / "ml.kubeconfig"
        download.value.save_as(text)
        assert "kind: Config" in text.read_text() and "current-context:" in text.read_text()
        context.close()
