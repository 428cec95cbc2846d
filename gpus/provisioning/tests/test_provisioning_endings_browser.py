"""Operations that used to end wrong (issue 20 items 9 and 11), in headless Chromium, English and
French, against devcluster over HTTP: a start on a running VM ends at once, and "Try again" on an
old operation of a VM deleted since is refused in plain words."""

from __future__ import annotations

import re
import time

import pytest
from django.db import transaction
from django.urls import reverse

from devcluster.testing import run_devcluster
from gpus.inventory.models import GpuWorkload
from gpus.provisioning import engine, services
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import Operation
from gpus.testing import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]

WORDS = {
    "en": {
        "already": "It was already running: nothing was changed.",
        "refused": "gpu-ws was deleted after this operation failed.",
        "gone": "Done: it is gone from the cluster.",
    },
    "fr": {
        "already": "Elle était déjà en marche\u00a0: rien n\u2019a été modifié.",
        "refused": "gpu-ws a été supprimée après l\u2019échec de cette opération.",
        "gone": "Terminé\u00a0: elle a disparu du cluster.",
    },
}


@pytest.fixture(autouse=True)
def fast_page_polling(settings):
    settings.OPERATION_PAGE_POLL_SECONDS = 0.5


@pytest.fixture
def eager_tasks():
    """The live server runs the tasks it sends (the worker's code, in its thread)."""
    import gpus.provisioning.tasks  # noqa: F401 (registers them, as the worker does)
    from hikube_portal.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def _ended(op: Operation, cluster_id: int, seconds: float = 90) -> Operation:
    """Beat's polls, run here: the operation's end as the cluster reports it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        op.refresh_from_db()
        if op.state in (OperationState.SUCCEEDED, OperationState.FAILED):
            return op
        engine.poll_cluster(cluster_id)
        time.sleep(0.2)
    raise AssertionError(f"operation stayed {op.state}: {op.reason} {op.message}")


@pytest.mark.parametrize("language", ["en", "fr"])
def test_start_a_running_vm_ends_at_once_and_an_old_retry_after_a_delete_is_refused(
    browser, live_server, alice, acme, tmp_path, register, eager_tasks, language
):
    words = WORDS[language]
    with run_devcluster(tmp_path / "dc", speed=200.0) as dc:
        cluster = register(dc)
        vm = GpuWorkload.objects.get(tenant=acme, name="gpu-ws", node_group="")
        assert vm.state == "running"
        context = browser.new_context(locale=language)
        page = context.new_page()
        page.goto(live_server.url + reverse("login"))
        page.locator("#id_username").fill("alice")
        page.locator("#id_password").fill(PASSWORD)
        page.locator("main button[type=submit]").click()
        page.wait_for_url(live_server.url + reverse("gpus:catalog"))

        # Start on a running VM (My GPUs offers it while its row is not yet synced after a
        # start): it writes nothing and ends at once, saying so, not after 15 minutes.
        page.goto(
            live_server.url + reverse("gpus:vm_action", args=[acme.namespace, "gpu-ws", "start"])
        )
        page.locator("#confirm-action").click()
        page.wait_for_url(re.compile(r".*/operations/\d+/$"))
        page.locator("#op-state[data-state='succeeded']").wait_for()
        assert words["already"] in page.locator("#op-done").inner_text()
        start = Operation.objects.get(name="gpu-ws", kind=OperationKind.START)
        assert start.state == OperationState.SUCCEEDED and start.reason == "AlreadyDone"

        # An old start that failed (its VM did not come up in time, say).
        with transaction.atomic():  # failed before its task is sent: the task finds it ended
            old = services.submit_vm_action(alice, vm, OperationKind.START)
            engine.fail(old, "Timeout", "Not ready after 15 minutes.")

        # Delete the VM from its page; the delete is free to run (the start did not block it).
        page.goto(live_server.url + reverse("gpus:workload", args=[acme.namespace, vm.pk]))
        page.locator(
            f"a[href='{reverse('gpus:vm_action', args=[acme.namespace, 'gpu-ws', 'delete'])}']"
        ).first.click()
        page.locator("#confirm-action").click()
        # The live server runs the delete's tasks in its own thread: slow on a loaded machine.
        page.wait_for_url(re.compile(r".*/operations/\d+/$"), timeout=90_000)
        delete = Operation.objects.get(name="gpu-ws", kind=OperationKind.DELETE)
        assert _ended(delete, cluster.pk).state == OperationState.SUCCEEDED
        page.reload()  # (the page's own refresh is another test's)
        assert words["gone"] in page.locator("#op-done").inner_text()

        # "Try again" on the old start would bring the VM back without its disk: refused, in
        # plain words, on the old operation's page, and nothing recorded.
        page.goto(live_server.url + reverse("gpus:operation", args=[acme.namespace, old.pk]))
        page.locator("#op-error button[type=submit]").click()
        page.wait_for_url(re.compile(rf".*/operations/{old.pk}/$"))
        message = page.locator("ul.messages li.message-error")
        message.wait_for()
        assert words["refused"] in message.inner_text()
        assert not Operation.objects.filter(params__retry_of=old.pk).exists()
        assert not Operation.objects.filter(kind=OperationKind.RETRY).exists()
        context.close()
