"""The Celery app, wired the Django way: settings CELERY_*, tasks autodiscovered."""

import logging.config
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hikube_portal.settings")

app = Celery("hikube_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# With LOG_FORMAT=json, the worker and beat log as the web does (Django's LOGGING: one JSON object
# a line) instead of Celery's own format. A connected receiver is what stops Celery configuring.
if os.environ.get("LOG_FORMAT", "text").lower() == "json":

    @signals.setup_logging.connect
    def _django_logging(**kwargs: object) -> None:
        from django.conf import settings

        logging.config.dictConfig(settings.LOGGING)


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, **kwargs: object) -> None:
    from gpus.web.logs import bind

    bind("task_id", task_id)


@signals.task_postrun.connect
def _task_finished(**kwargs: object) -> None:
    from gpus.web.logs import bind

    bind("task_id", None)
