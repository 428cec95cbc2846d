import shutil
import subprocess
from pathlib import Path

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def test_browser_language_french_is_used(alice_client):
    html = alice_client.get(
        reverse("gpus:compare"), HTTP_ACCEPT_LANGUAGE="fr-CH,fr;q=0.9"
    ).content.decode()
    assert 'lang="fr"' in html
    assert "Comparer les modèles de GPU" in html
    assert "Complète (1 GPU = 1 VM)" in html


def test_english_is_the_fallback(alice_client):
    html = alice_client.get(reverse("gpus:compare"), HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert 'lang="en"' in html
    assert "Compare GPU models" in html


def test_switcher_sets_the_language(alice_client):
    response = alice_client.post(
        reverse("set_language"), {"language": "fr", "next": reverse("gpus:advisor")}
    )
    assert response.status_code == 302
    html = alice_client.get(reverse("gpus:advisor"), {"workload": "llm"}).content.decode()
    assert "Quel GPU, et de quelle manière ?" in html
    assert "Hikube positionne la H100" in html


def test_switcher_works_on_the_login_page(client):
    response = client.post(reverse("set_language"), {"language": "de", "next": reverse("login")})
    assert response.status_code == 302
    assert "Anmelden" in client.get(reverse("login")).content.decode()


def test_catalog_notes_follow_the_language(alice_client):
    html = alice_client.get(reverse("gpus:catalog"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "la version 94 Go est la H100 NVL" in html


@pytest.mark.parametrize("language", ["fr", "de"])
def test_message_catalogs_are_complete(language):
    """No untranslated and no fuzzy entry in the committed catalogs (gettext's msgattrib)."""
    msgattrib = shutil.which("msgattrib")
    assert msgattrib, "gettext is not installed (apt-get install gettext)"
    po = ROOT / "locale" / language / "LC_MESSAGES" / "django.po"
    for flag in ("--untranslated", "--only-fuzzy"):
        out = subprocess.run(
            [msgattrib, flag, "--no-obsolete", str(po)], capture_output=True, text=True, check=True
        ).stdout
        assert "msgid" not in out, f"{language} has {flag} entries:\n{out}"


def test_numbers_and_dates_follow_the_language(alice_client):
    from django.utils import formats, timezone, translation

    from gpus.models import Cluster

    synced = timezone.now()
    Cluster.objects.create(name="c", last_synced_at=synced)
    english = alice_client.get(reverse("gpus:catalog"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    french = alice_client.get(reverse("gpus:catalog"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "91.6 TFLOPS" in english
    assert "91,6 TFLOPS" in french
    dates = {}
    for language in ("en", "fr"):
        with translation.override(language):
            dates[language] = formats.date_format(timezone.localtime(synced), "DATETIME_FORMAT")
    assert dates["en"] != dates["fr"]
    page = alice_client.get(reverse("gpus:inventory"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert dates["fr"] in page
