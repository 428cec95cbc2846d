"""A tenant creates a GPU VM in headless Chromium: fills the form, reads the preview, watches the
operation reach Running (real Celery worker, devcluster over HTTP)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from devcluster.testing import run_devcluster
from gpus.provisioning.models import Operation

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]
TIMES = "\N{MULTIPLICATION SIGN}"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx4yH1uQeQ5K3m3sQm7nYyq7bYp1pZ7rj2qj6w8x1y2 me@host"


@pytest.fixture(autouse=True)
def fast_page_polling(settings):
    settings.OPERATION_PAGE_POLL_SECONDS = 0.5


def test_create_a_gpu_vm_and_watch_it_run(
    page, live_server, alice, acme, tmp_path, worker_factory, register, log_in
):
    with run_devcluster(tmp_path / "dc", speed=200.0) as dc:
        register(dc)
        worker = worker_factory()
        worker.start()
        log_in("alice")
        page.get_by_role("link", name="My GPUs").click()
        page.get_by_role("link", name="New GPU virtual machine").first.click()
        page.wait_for_url(re.compile(r".*/vms/new/$"))
        # htmx must have processed the form before typing, or the first input is not checked.
        page.wait_for_function(
            "window.htmx && document.querySelector('#vm-form')['htmx-internal-data']"
        )
        page.get_by_label("Name", exact=True).fill("Bad_Name")
        error = page.locator("#err-name .field-error")
        error.wait_for()
        assert "lowercase" in error.inner_text()
        page.get_by_label("Name", exact=True).fill("browser-vm")
        page.get_by_label("GPU model").select_option("nvidia.com/H100_94GB")
        page.get_by_label("Number of GPUs").fill("2")
        page.get_by_label("Instance type").select_option("u1.8xlarge")
        page.get_by_label("SSH public keys").fill(KEY)
        page.locator("#err-name .field-error").wait_for(state="detached")
        preview = page.locator("#preview-yaml")
        page.wait_for_function(
            "document.querySelector('#preview-yaml') && "
            "document.querySelector('#preview-yaml').textContent.includes('u1.8xlarge')"
        )
        text = preview.inner_text()
        assert "kind: VMInstance" in text and "kind: VMDisk" in text
        assert text.count("name: nvidia.com/H100_94GB") == 2
        assert "apply -f browser-vm.yaml" in page.locator("#kubectl-cmd").inner_text()
        assert "2 × NVIDIA H100 NVL requested" in page.locator("#fit").inner_text()
        page.get_by_role("button", name="Create").click()
        page.wait_for_url(re.compile(r".*/operations/\d+/$"))
        page.locator("#op-state[data-state='succeeded']").wait_for(timeout=90_000)
        assert page.locator("#op-steps li.done").count() == 5
        assert "running" in page.locator("#op-done").inner_text()
        op = Operation.objects.get(name="browser-vm")
        assert op.running_at is not None
        page.goto(live_server.url + reverse("gpus:operations", args=[acme.namespace]))
        assert "browser-vm" in page.locator("#operations").inner_text()


def test_resize_a_node_group_and_watch_the_workers_change(
    page, live_server, alice, acme, tmp_path, worker_factory, settings, register, log_in
):
    """My GPUs -> Resize on the demo cluster's GPU group -> 3 workers: the operation finishes,
    and My GPUs, refreshing itself (no reload), shows the third worker holding its GPU."""
    settings.PAGE_REFRESH_SECONDS = 1
    with run_devcluster(tmp_path / "dc", speed=200.0) as dc:
        register(dc)
        worker = worker_factory()
        worker.start()
        log_in("alice")
        page.get_by_role("link", name="My GPUs").click()
        row = page.locator("#my-gpus tr", has_text="ml / gpu")
        assert f"{TIMES} 2 workers (2 held)" in row.inner_text()
        row.get_by_role("link", name="Resize").click()
        page.wait_for_url(re.compile(r".*/kubernetes/ml/nodegroups/gpu/$"))
        assert page.get_by_label("Minimum workers").input_value() == "2"
        page.get_by_label("Minimum workers").fill("3")
        page.get_by_label("Maximum workers").fill("3")
        page.get_by_role("button", name="Check and preview").click()
        assert "minReplicas: 3" in page.locator("#preview-yaml").inner_text()
        page.locator("#node-group-submit").click()
        page.wait_for_url(re.compile(r".*/operations/\d+/$"))
        page.locator("#op-state[data-state='succeeded']").wait_for(timeout=90_000)
        op = Operation.objects.get(name="ml", node_group="gpu", kind="resize")
        assert op.observed["available"] == 3

        page.get_by_role("link", name="My GPUs").first.click()
        page.evaluate("window.__notReloaded = true")
        page.locator("#my-gpus tr", has_text=f"{TIMES} 3 workers (3 held)").filter(
            has_text="ml / gpu"
        ).wait_for(timeout=60_000)
        assert page.evaluate("window.__notReloaded === true")  # htmx swapped the rows in
