import pytest
from django.urls import reverse

from gpus.catalog.compare import compare_rows
from gpus.catalog.models import GpuModel

pytestmark = pytest.mark.django_db


def offered():
    return list(GpuModel.objects.filter(offered=True).order_by("sort_order"))


def test_best_value_of_each_numeric_row_is_marked():
    l40s, a100, h100 = offered()
    rows = {str(row.label): row for row in compare_rows([l40s, a100, h100])}
    int8 = rows["INT8"]
    assert [cell.best for cell in int8.cells] == [False, False, True]  # H100 NVL: 1670.5
    memory = rows["Memory"]
    assert [cell.best for cell in memory.cells] == [False, False, True]  # 94 > 80 > 48
    tensor = rows["Tensor"]
    assert [cell.best for cell in tensor.cells] == [False, False, True]  # None, 624, 835.5


def test_a_figure_documented_for_one_model_only_is_not_called_best():
    l40s, a100, _ = offered()
    rows = {str(row.label): row for row in compare_rows([l40s, a100])}
    assert [cell.best for cell in rows["FP32"].cells] == [False, False]


def test_compare_page_defaults_to_the_three_offered_models(alice_client):
    response = alice_client.get(reverse("gpus:compare"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="compare-table"' in html
    assert html.count('class="best"') >= 3
    for aspect in (
        "Isolation",
        "Performance",
        "Management",
        "Scaling",
        "Sharing",
        "Complexity",
        "Use cases",
    ):
        assert aspect in html
    assert "Complete (1 GPU = 1 VM)" in html


def test_compare_two_chosen_models(alice_client):
    l40s, a100, _ = offered()
    response = alice_client.get(reverse("gpus:compare"), {"models": [l40s.pk, a100.pk]})
    html = response.content.decode()
    assert "NVIDIA L40S" in html and "NVIDIA A100" in html
    assert '<th scope="col">NVIDIA H100</th>' not in html


def test_picking_one_model_gives_an_error_next_to_the_field(alice_client):
    l40s = offered()[0]
    response = alice_client.get(reverse("gpus:compare"), {"models": [l40s.pk]})
    assert response.status_code == 200
    assert "Pick two or three models to compare (you picked 1)." in response.content.decode()


def test_an_unknown_model_id_is_a_field_error_not_a_500(alice_client):
    response = alice_client.get(reverse("gpus:compare"), {"models": ["999999", "abc"]})
    assert response.status_code == 200
    assert "field-error" in response.content.decode()


def test_htmx_request_gets_only_the_table(alice_client):
    l40s, _a100, h100 = offered()
    response = alice_client.get(
        reverse("gpus:compare"), {"models": [l40s.pk, h100.pk]}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert 'id="compare-table"' in html
    assert "<html" not in html
