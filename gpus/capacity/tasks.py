"""Celery tasks of capacity: the rollups with retention, and expired waitlist wishes. Sent by
name from the beat."""

from __future__ import annotations

from celery import shared_task

from gpus.capacity import history, services


@shared_task(name="capacity.rollup_history")
def rollup_history() -> dict[str, int]:
    written = history.rollup()
    written["waitlist_expired"] = services.expire_waitlist()
    return written
