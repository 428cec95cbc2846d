"""Sending work to the Celery worker by task name, so no module imports a task module to enqueue
(and no import circle runs through the tasks)."""

from __future__ import annotations

from celery import current_app
from django.db import transaction


def enqueue(task_name: str, *args: object) -> None:
    """Send one task by its registered name, e.g. ``enqueue("inventory.sync_inventory", 3)``."""
    if current_app.conf.task_always_eager:
        current_app.tasks[task_name].apply(args=args)
        return
    current_app.send_task(task_name, args=args)


def enqueue_on_commit(task_name: str, *args: object) -> None:
    """Send it once the current transaction commits: the worker must find the rows it reads."""
    transaction.on_commit(lambda: enqueue(task_name, *args))
