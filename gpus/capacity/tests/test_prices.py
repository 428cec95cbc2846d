"""Prices, estimates and spend (#18 item 5, the spend parts of items 7 and 8): admins keep an
append-only price list in the portal; the VM and node-group forms show the cost before anything
is sent, equal to the list (including a list that starts later); spend prices each day with the
list in force that day; the exports match the page; every new URL is a 404 for other tenants
and admin-only where it says."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gpus.accounts.services import create_token
from gpus.capacity import history, pricing
from gpus.capacity.models import Bucket, CapacitySample, GpuPrice, PriceList, TenantUsage
from gpus.capacity.pricing import money
from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import CatalogueEntry, Cluster, GpuWorkload, TenantAllocation
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import Operation
from gpus.provisioning.tests.test_provisioning_quota_security import group_form
from gpus.provisioning.tests.test_provisioning_views import form_data
from gpus.testing import H100, L40S
from gpus.utilization.models import Bucket as UtilBucket
from gpus.utilization.models import GroupRollup, Scope

pytestmark = pytest.mark.django_db
D = Decimal
HOURS = D(730)


def today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def price_list(valid_from: dt.date, gpu: dict[str, str], vcpu="0.02", memory="0.005", disk="0.1"):
    """A list as an admin would have saved it on that day (the service refuses past days)."""
    pl = PriceList.objects.create(
        valid_from=valid_from,
        currency="CHF",
        vcpu_hour=D(vcpu),
        memory_gib_hour=D(memory),
        disk_gib_month=D(disk),
        set_by="admin",
    )
    for resource, hour in gpu.items():
        GpuPrice.objects.create(
            price_list=pl, gpu_model=GpuModel.objects.get(resource_name=resource), hour=D(hour)
        )
    return pl


def read_csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_admin_keeps_the_price_list_in_the_portal(admin_client_, alice_client, bob_client):
    l40s = GpuModel.objects.get(resource_name=L40S)
    url = reverse("gpus:capacity_prices")
    post = {
        "valid_from": str(today()),
        "currency": "EUR",
        "vcpu_hour": "0.03",
        "memory_gib_hour": "0.004",
        "disk_gib_month": "0.12",
        f"gpu_{l40s.pk}": "1.5",
    }
    assert admin_client_.post(url, post).status_code == 302
    saved = PriceList.objects.get()
    assert (saved.currency, saved.vcpu_hour, saved.set_by) == ("EUR", D("0.03"), "admin")
    assert GpuPrice.objects.get(price_list=saved).hour == D("1.5")
    # The same prices again: nothing saved (no second entry in the trail).
    admin_client_.post(url, post)
    assert PriceList.objects.count() == 1
    # A later list: a new row, the old one kept as it was (old spend keeps old prices).
    later = today() + dt.timedelta(days=3)
    admin_client_.post(url, {**post, "valid_from": str(later), f"gpu_{l40s.pk}": "1.8"})
    assert list(PriceList.objects.values_list("valid_from", flat=True)) == [later, today()]
    with pytest.raises(ValueError):
        saved.save()
    page = admin_client_.get(url).content.decode()
    assert f'id="price-list-{saved.pk}"' in page and "admin" in page
    # Bad input: the reason next to the field, never a 500; nothing saved.
    past = admin_client_.post(url, {**post, "valid_from": str(today() - dt.timedelta(days=1))})
    assert past.status_code == 200
    assert "spend already counted keeps its prices" in past.context["form"].errors["valid_from"][0]
    negative = admin_client_.post(url, {**post, "vcpu_hour": "-1"})
    assert "vcpu_hour" in negative.context["form"].errors
    assert PriceList.objects.count() == 2
    # Admin-only: a 404 for tenants, on GET and POST.
    for client in (alice_client, bob_client):
        assert client.get(url).status_code == 404
        assert client.post(url, post).status_code == 404
    assert PriceList.objects.count() == 2


def test_the_vm_form_shows_the_cost_of_the_list_in_force(alice_client, acme, cluster):
    check = reverse("gpus:vm_check", args=[acme.namespace])
    html = alice_client.post(check, form_data()).content.decode()
    assert "No price list is in force yet" in html
    # A list without the model: said, and its GPUs not counted.
    price_list(today() - dt.timedelta(days=10), {H100: "3"})
    html = alice_client.post(check, form_data()).content.decode()
    assert "has no price in the list" in html
    no_gpu = 8 * D("0.02") + 32 * D("0.005") + 50 * D("0.1") / HOURS
    assert f"{money(no_gpu, 'CHF')} an hour" in html
    # Since yesterday, a list with it; one that starts tomorrow does not change today's cost.
    price_list(today() - dt.timedelta(days=1), {L40S: "1.2"})
    price_list(today() + dt.timedelta(days=1), {L40S: "9.9"}, vcpu="1")
    # u1.2xlarge: 8 vCPU, 32 GiB; 2 L40S; a 50 GiB disk priced per GiB-month of 730 hours.
    hour = 2 * D("1.2") + 8 * D("0.02") + 32 * D("0.005") + 50 * D("0.1") / HOURS
    html = alice_client.post(check, form_data(gpu_count="2")).content.decode()
    assert f"{money(hour, 'CHF')} an hour, {money(hour * HOURS, 'CHF')} a month" in html
    assert "has no price" not in html
    # The function others use agrees, and from tomorrow it reads the later list.
    l40s = GpuModel.objects.get(resource_name=L40S)
    assert pricing.monthly_cost(l40s, 2, 8, 32, 50) == pricing.Money(hour * HOURS, "CHF")
    tomorrow = 2 * D("9.9") + 8 * D(1) + 32 * D("0.005") + 50 * D("0.1") / HOURS
    got = pricing.monthly_cost(l40s, 2, 8, 32, 50, today() + dt.timedelta(days=1))
    assert got == pricing.Money(tomorrow * HOURS, "CHF")
    # The full page shows the same once posted (nothing is sent without the button).
    page = alice_client.post(
        reverse("gpus:vm_new", args=[acme.namespace]), form_data(gpu_count="2", name="")
    )
    assert money(hour * HOURS, "CHF") in page.content.decode()
    assert not Operation.objects.exists()


def test_the_node_group_form_shows_minimum_maximum_and_the_roll(alice_client, acme, tenant_cluster):
    price_list(today(), {L40S: "1.2"})
    worker = D("1.2") + 8 * D("0.02") + 32 * D("0.005") + 100 * D("0.1") / HOURS
    new = reverse("gpus:node_group_new_check", args=[acme.namespace])
    html = alice_client.post(new, group_form(min_replicas="2", max_replicas="4")).content.decode()
    assert f"{money(2 * worker, 'CHF')} an hour, {money(2 * worker * HOURS, 'CHF')} a month" in html
    assert f"up to {money(4 * worker, 'CHF')} an hour" in html
    # French puts a no-break space before the colon and the semicolon.
    fr = alice_client.post(
        new, group_form(min_replicas="2", max_replicas="4"), HTTP_ACCEPT_LANGUAGE="fr"
    ).content.decode()
    assert "Coût\u00a0:" in fr and "\u00a0; jusqu’à" in fr
    assert "During the roll" not in html
    # A resize to a larger instance type rolls every worker: the 2 old workers (u1.2xlarge) run
    # until up to 2 new ones (u1.8xlarge: 32 vCPU, 128 GiB; maxSurge = maxReplicas) replace them.
    resize = reverse("gpus:node_group_edit_check", args=[acme.namespace, "ml", "gpu"])
    data = group_form(group="gpu", min_replicas="2", max_replicas="2", instance_type="u1.8xlarge")
    html = alice_client.post(resize, data).content.decode()
    bigger = D("1.2") + 32 * D("0.02") + 128 * D("0.005") + 100 * D("0.1") / HOURS
    assert "Every worker is replaced" in html
    assert f"{money(2 * bigger, 'CHF')} an hour" in html
    during = money(2 * worker + 2 * bigger, "CHF")
    assert f"up to 2 new workers run beside the 2 old ones: up to {during}" in html


def _usage(cluster, tenant, day: dt.date, gpu_hours: float, vcpu_hours: float = 0, disk=0.0):
    TenantUsage.objects.create(
        bucket=Bucket.DAY,
        ts=midnight(day),
        cluster=cluster,
        tenant=tenant,
        gpu_model=GpuModel.objects.get(resource_name=L40S),
        gpus_max=2,
        gpu_hours=gpu_hours,
        vcpu_hours=vcpu_hours,
        memory_gib_hours=0,
        disk_gib_hours=disk,
    )


def test_spend_uses_the_price_in_force_on_each_day(admin_client_, acme, globex):
    cluster = Cluster.objects.create(name="c1")
    t = today()
    price_list(t - dt.timedelta(days=5), {L40S: "1"}, vcpu="0.01")
    price_list(t - dt.timedelta(days=2), {L40S: "2"}, vcpu="0.03")
    _usage(cluster, acme, t - dt.timedelta(days=6), 100)  # before any list: not priced
    _usage(cluster, acme, t - dt.timedelta(days=3), 10, vcpu_hours=80)
    _usage(cluster, acme, t - dt.timedelta(days=1), 5, vcpu_hours=40, disk=730)
    _usage(cluster, globex, t - dt.timedelta(days=1), 1)
    expected = 10 * D(1) + 80 * D("0.01") + 5 * D(2) + 40 * D("0.03") + 730 * D("0.1") / HOURS
    params = {"start": str(t - dt.timedelta(days=4)), "end": str(t + dt.timedelta(days=1))}
    rows = read_csv(admin_client_.get(reverse("gpus:capacity_export_spend"), params))
    assert [(r["tenant"], r["currency"], D(r["amount"])) for r in rows] == [
        ("tenant-acme", "CHF", expected.quantize(D("0.01"))),
        ("tenant-globex", "CHF", D("2.00")),
    ]
    assert float(rows[0]["gpu_hours"]) == 15 and float(rows[0]["vcpu_hours"]) == 120
    # Usage before the first list is counted, not priced (a row without a currency).
    params["start"] = str(t - dt.timedelta(days=7))
    rows = read_csv(admin_client_.get(reverse("gpus:capacity_export_spend"), params))
    unpriced = [r for r in rows if r["currency"] == ""]
    assert [(r["gpu_hours"], r["amount"]) for r in unpriced] == [("100.0", "0.00")]


def test_usage_rows_count_what_the_workloads_hold_besides_gpus(acme, alice):
    """At each sync: GPU-hours, and the vCPU, memory and disk of the workloads holding them (a
    node group from its spec, a VM from the portal's succeeded create)."""
    cluster = Cluster.objects.create(name="c1")
    # The sizes come from the instance types the cluster serves (the sync's catalogue).
    for name, vcpu, gib in (("u1.2xlarge", 8, 32), ("u1.xlarge", 4, 16)):
        CatalogueEntry.objects.create(
            cluster=cluster, kind=CatalogueEntry.Kind.INSTANCE_TYPE, name=name, vcpu=vcpu,
            memory_mib=gib * 1024,
        )  # fmt: skip
    l40s = GpuModel.objects.get(resource_name=L40S)
    TenantAllocation.objects.create(
        cluster=cluster, namespace=acme.namespace, tenant=acme, gpu_model=l40s, allocated=3
    )
    common = {"cluster": cluster, "tenant": acme, "gpu_model": l40s, "gpus_per_instance": 1}
    GpuWorkload.objects.create(
        **common, kind=WorkloadKind.NODE_GROUP, app_kind="Kubernetes", name="ml",
        node_group="gpu", instances=2, gpus_held=2, state=ResourceState.RUNNING,
        group_spec={"instance_type": "u1.2xlarge", "disk": "100Gi"},
    )  # fmt: skip
    GpuWorkload.objects.create(
        **common, kind=WorkloadKind.VM, app_kind="VMInstance", name="ws", gpus_held=1,
        state=ResourceState.RUNNING,
    )  # fmt: skip
    Operation.objects.create(
        cluster=cluster, tenant=acme, actor=alice, actor_name="alice", kind=OperationKind.CREATE,
        namespace=acme.namespace, app_kind="VMInstance", name="ws", gpu_model=l40s, gpu_count=1,
        state=OperationState.SUCCEEDED,
        params={"instance_type": "u1.xlarge", "disk_size_gi": 50},
    )  # fmt: skip
    at = timezone.now().replace(minute=10, second=0, microsecond=0)
    CapacitySample.objects.create(cluster=cluster, gpu_model=l40s, at=at - dt.timedelta(minutes=6))
    history.record_samples(cluster.pk, at)
    row = TenantUsage.objects.get(bucket=Bucket.HOUR, tenant=acme)
    tenth = 6 / 60  # six minutes since the previous sample
    assert row.gpu_hours == pytest.approx(3 * tenth)
    # 2 workers x (8 vCPU, 32 GiB, 100 GiB) and the VM's u1.xlarge (4 vCPU, 16 GiB) with 50 GiB.
    assert row.vcpu_hours == pytest.approx((2 * 8 + 4) * tenth)
    assert row.memory_gib_hours == pytest.approx((2 * 32 + 16) * tenth)
    assert row.disk_gib_hours == pytest.approx((2 * 100 + 50) * tenth)
    # The daily rollup sums them.
    history.rollup(at + dt.timedelta(minutes=1))
    day = TenantUsage.objects.get(bucket=Bucket.DAY, tenant=acme)
    assert day.vcpu_hours == pytest.approx(row.vcpu_hours)
    assert day.disk_gib_hours == pytest.approx(row.disk_gib_hours)


def test_the_spend_page_matches_the_exports_and_shows_energy(
    alice_client, admin_client_, acme, alice
):
    cluster = Cluster.objects.create(name="c1")
    t = today()
    price_list(t - dt.timedelta(days=40), {L40S: "1.5"})
    _usage(cluster, acme, t, 12, vcpu_hours=96)
    now = timezone.now()
    GroupRollup.objects.create(
        bucket=UtilBucket.HOUR,
        scope=Scope.TENANT,
        key=acme.namespace,
        ts=now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1),
        energy_wh=2500,
        gpu_hours=12,
    )
    url = reverse("gpus:capacity_tenant_spend", args=[acme.namespace])
    response = alice_client.get(url)
    page = response.content.decode()
    spent = 12 * D("1.5") + 96 * D("0.02")
    assert money(spent, "CHF") in page and "2.5 kWh" in page
    # The tenant's own CSV and JSON for this month say the same as the page.
    month = pricing.month_start(now)
    params = {"start": str(month.date()), "end": str(t + dt.timedelta(days=1))}
    rows = read_csv(
        alice_client.get(reverse("gpus:capacity_tenant_spend_csv", args=[acme.namespace]), params)
    )
    assert sum(D(r["amount"]) for r in rows) == spent.quantize(D("0.01"))
    token = create_token(alice, "ci")[1]
    api = Client()
    got = api.get(
        f"/api/v1/tenants/{acme.namespace}/spend", params, HTTP_AUTHORIZATION=f"Bearer {token}"
    ).json()
    assert [(r["gpu_model"], D(r["amount"])) for r in got] == [(L40S, spent.quantize(D("0.01")))]
    # The forecast: spent so far plus what acme holds now (nothing here) for the rest.
    assert response.context["spend"].forecast.amounts == {"CHF": spent}
    # The energy chart: one bar a day, in kWh.
    chart = alice_client.get(reverse("gpus:capacity_tenant_energy", args=[acme.namespace]))
    assert sum(chart.json()["figure"]["data"][0]["y"]) == pytest.approx(2.5)
    # Dates on the axis over the whole 30 days, even with a single day to show.
    xaxis = chart.json()["figure"]["layout"]["xaxis"]
    assert xaxis["tickformat"] == "%Y-%m-%d" and xaxis["range"][0] < xaxis["range"][1]
    # Admins see every tenant's, and the same figure on the tenant's page.
    fleet = admin_client_.get(reverse("gpus:capacity_spend")).content.decode()
    assert 'id="spend-tenant-acme"' in fleet and money(spent, "CHF") in fleet
    assert money(spent, "CHF") in admin_client_.get(url).content.decode()


def test_spend_urls_are_404_for_other_tenants_and_admin_only_where_said(
    alice_client, bob_client, alice, bob, acme
):
    for name in (
        "gpus:capacity_tenant_spend",
        "gpus:capacity_tenant_energy",
        "gpus:capacity_tenant_spend_csv",
    ):
        assert bob_client.get(reverse(name, args=[acme.namespace])).status_code == 404, name
        assert alice_client.get(reverse(name, args=[acme.namespace])).status_code == 200, name
    for name in ("gpus:capacity_prices", "gpus:capacity_spend", "gpus:capacity_export_spend"):
        assert alice_client.get(reverse(name)).status_code == 404, name
    api = Client()
    bob_token = create_token(bob, "ci")[1]
    alice_token = create_token(alice, "ci")[1]
    assert (
        api.get(
            f"/api/v1/tenants/{acme.namespace}/spend", HTTP_AUTHORIZATION=f"Bearer {bob_token}"
        ).status_code
        == 404
    )
    assert (
        api.get("/api/v1/capacity/spend", HTTP_AUTHORIZATION=f"Bearer {alice_token}").status_code
        == 404
    )
    # Bad input: the field's error, never a 500.
    bad = {"start": "2026-01-10", "end": "2026-01-01"}
    response = alice_client.get(
        reverse("gpus:capacity_tenant_spend_csv", args=[acme.namespace]), bad
    )
    assert response.status_code == 400 and "end" in response.json()
    response = api.get(
        f"/api/v1/tenants/{acme.namespace}/spend", bad, HTTP_AUTHORIZATION=f"Bearer {alice_token}"
    )
    assert response.status_code == 422 and "end" in response.json()["errors"]


def test_a_change_of_currency_splits_the_spend_and_never_fails(alice_client, admin_client_, acme):
    cluster = Cluster.objects.create(name="c1")
    t = today()
    price_list(t - dt.timedelta(days=3), {L40S: "1"})
    eur = price_list(t, {L40S: "2"})
    PriceList.objects.filter(pk=eur.pk).update(currency="EUR")
    _usage(cluster, acme, t - dt.timedelta(days=1), 10)
    _usage(cluster, acme, t, 10)
    params = {"start": str(t - dt.timedelta(days=2)), "end": str(t + dt.timedelta(days=1))}
    rows = read_csv(admin_client_.get(reverse("gpus:capacity_export_spend"), params))
    assert sorted((r["currency"], r["amount"]) for r in rows) == [
        ("CHF", "10.00"),
        ("EUR", "20.00"),
    ]
    for client in (alice_client, admin_client_):
        assert (
            client.get(reverse("gpus:capacity_tenant_spend", args=[acme.namespace])).status_code
            == 200
        )
    assert admin_client_.get(reverse("gpus:capacity_spend")).status_code == 200


def test_a_month_in_two_currencies_has_a_total_in_each(alice_client, admin_client_, alice, acme):
    """A month priced by a CHF list and then a EUR one: the tenant's page, the admins' page and
    the CSV and JSON exports give each currency its own total; CHF is never added to EUR."""
    cluster = Cluster.objects.create(name="c1")
    first = pricing.month_start(timezone.now()).date()
    price_list(first - dt.timedelta(days=3), {L40S: "1"}, vcpu="0.01")
    eur = price_list(first + dt.timedelta(days=15), {L40S: "2"}, vcpu="0.01")
    PriceList.objects.filter(pk=eur.pk).update(currency="EUR")
    _usage(cluster, acme, first, 1140, vcpu_hours=0)  # CHF 1,140.00
    _usage(cluster, acme, first + dt.timedelta(days=20), 115, vcpu_hours=0)  # EUR 230.00
    both = f"{money(D(1140), 'CHF')} + {money(D(230), 'EUR')}"
    assert both == "CHF\u00a01,140.00 + EUR\u00a0230.00"
    spend = pricing.tenant_spend(acme)
    assert spend.month.amounts == {"CHF": D(1140), "EUR": D(230)}
    assert spend.month.text == both and spend.month.gpu_hours == 1255
    (this_month,) = spend.by_month
    assert this_month[1].text == both
    # The forecast keeps both (nothing held now: nothing added).
    assert spend.forecast is not None and spend.forecast.amounts == {"CHF": D(1140), "EUR": D(230)}
    page = alice_client.get(reverse("gpus:capacity_tenant_spend", args=[acme.namespace]))
    html = page.content.decode()
    assert html.count(both) >= 4  # this month, its forecast, the model's row and the month's
    fleet = admin_client_.get(reverse("gpus:capacity_spend")).content.decode()
    row = fleet[fleet.index('id="spend-tenant-acme"') :].split("</tr>")[0]
    assert row.count(both) == 2  # spent so far and the forecast
    # The exports: a row per currency, and their sums per currency are the page's.
    params = {"start": str(first), "end": str(pricing.next_month(pricing.month_start(
        timezone.now())).date())}  # fmt: skip
    rows = read_csv(
        alice_client.get(reverse("gpus:capacity_tenant_spend_csv", args=[acme.namespace]), params)
    )
    assert sorted((r["currency"], D(r["amount"])) for r in rows) == [
        ("CHF", D("1140.00")),
        ("EUR", D("230.00")),
    ]
    token = create_token(alice, "ci")[1]
    got = (
        Client()
        .get(
            f"/api/v1/tenants/{acme.namespace}/spend", params, HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        .json()
    )
    assert sorted((r["currency"], D(r["amount"])) for r in got) == [
        ("CHF", D("1140.00")),
        ("EUR", D("230.00")),
    ]


def test_energy_reads_the_hourly_rollups_or_the_5_minute_ones_before_an_hour_closed(acme):
    from gpus.capacity.selectors import tenant_energy

    now = timezone.now().replace(second=0, microsecond=0)
    since = now - dt.timedelta(days=1)
    row = {"scope": Scope.TENANT, "key": acme.namespace}
    GroupRollup.objects.create(bucket=UtilBucket.FIVE_MINUTES, ts=now, energy_wh=100, **row)
    assert [d["kwh"] for d in tenant_energy(acme, since)] == [pytest.approx(0.1)]
    GroupRollup.objects.create(
        bucket=UtilBucket.HOUR, ts=now - dt.timedelta(hours=2), energy_wh=1000, **row
    )
    assert sum(d["kwh"] for d in tenant_energy(acme, since)) == pytest.approx(1.0)
