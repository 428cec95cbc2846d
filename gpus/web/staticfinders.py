"""Serve plotly.js from the pinned `plotly` package as static/vendor/plotly.min.js (no CDN, no
4 MB copy in the repository): collectstatic and runserver find it here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PACKAGE_DATA = Path(plotly.__file__).parent / "package_data"
SERVED = {"vendor/plotly.min.js": "plotly.min.js"}


class VendorStorage(FileSystemStorage):
    """plotly's package_data seen as the `vendor/` folder."""

    def __init__(self) -> None:
        super().__init__(location=str(PACKAGE_DATA))
        self.prefix = "vendor"


class PlotlyFinder(BaseFinder):
    def check(self, **kwargs: Any) -> list:
        return []

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> str | list[str]:
        name = SERVED.get(path)
        if name is None:
            return [] if find_all or kwargs.get("all") else ""
        found = str(PACKAGE_DATA / name)
        return [found] if find_all or kwargs.get("all") else found

    def list(self, ignore_patterns: Any) -> Any:
        storage = VendorStorage()
        for name in SERVED.values():
            yield name, storage
