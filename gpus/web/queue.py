"""Sending work to the Celery worker by task name, so no module imports a task module to enqueue
(and no import circle runs through the tasks)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)


def enqueue(task_name: str, *args: object, countdown: float | None = None) -> None:
    """Send one task by its registered name, e.g. ``enqueue("inventory.sync_inventory", 3)``;
    ``countdown`` delays it (a nudge: run eagerly, there is no later, so it is dropped)."""
    if current_app.conf.task_always_eager:
        if countdown is None:
            current_app.tasks[task_name].apply(args=args)
        return
    current_app.send_task(task_name, args=args, countdown=countdown)


def enqueue_on_commit(
    task_name: str,
    *args: object,
    sent: Callable[[bool], None] | None = None,
    countdown: float | None = None,
) -> None:
    """Send it once the current transaction commits: the worker must find the rows it reads.

    The broker being down is logged, not raised: the rows are committed, so the record stands
    and the reconciler (beat) sends its task again once the queue is back; a 500 would say the
    request failed when it did not. ``sent`` hears whether the task went."""

    def send() -> None:
        try:
            if countdown is None:
                enqueue(task_name, *args)
            else:
                enqueue(task_name, *args, countdown=countdown)
        except (OperationalError, OSError) as exc:
            log.warning("Task %s%r not sent, the broker is unreachable: %s", task_name, args, exc)
            went = False
        else:
            went = True
        if sent is not None:
            sent(went)

    transaction.on_commit(send)
