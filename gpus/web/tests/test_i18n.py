import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.urls import reverse

# Translations do not depend on the database or broker flavour: the first CI pass runs these.
pytestmark = [pytest.mark.django_db, pytest.mark.once]
ROOT = Path(__file__).resolve().parents[3]


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
    assert "Quel GPU, et de quelle manière\u00a0?" in html
    assert "Hikube positionne la H100" in html


def test_switcher_works_on_the_login_page(client):
    response = client.post(reverse("set_language"), {"language": "de", "next": reverse("login")})
    assert response.status_code == 302
    assert "Anmelden" in client.get(reverse("login")).content.decode()


def test_catalog_notes_follow_the_language(alice_client):
    html = alice_client.get(reverse("gpus:catalog"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "nvidia.com/H100_94GB est la H100 NVL (PCI 10DE:2321, 94 Go" in html


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

    from gpus.inventory.models import Cluster

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


# --- what a French, German or English reader meets --------------------------------------


def test_french_puts_a_non_breaking_space_before_double_punctuation():
    po = (ROOT / "locale" / "fr" / "LC_MESSAGES" / "django.po").read_text()
    # A long msgstr is split over several quoted lines: join them, or the check misses it.
    entries = re.findall(r'^msgstr(?:\[\d\])? ((?:".*"\n?)+)', po, flags=re.MULTILINE)
    strings = ["".join(re.findall(r'^"(.*)"$', e, flags=re.MULTILINE)) for e in entries]
    bad = [
        s
        for s in strings
        # The header entry ("Project-Id-Version: ...") is metadata, not French prose.
        if re.search(r"[^\u00a0\u202f][:;?!](\s|$|\\n)", s) and not s.startswith("Project-Id")
    ]
    assert bad == []


def test_french_says_tenant_everywhere():
    """One word for one thing: the navigation, tables and filters say "tenant" (Cozystack's
    term), so a header cannot say "Locataire" beside a "Tenant" filter."""
    po = (ROOT / "locale" / "fr" / "LC_MESSAGES" / "django.po").read_text()
    assert "ocataire" not in po


def test_node_sort_menu_follows_the_language_and_says_name_once(admin_client_):
    page = admin_client_.get(reverse("gpus:nodes"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    start = page.index('name="sort"')
    sort = html.unescape(page[start : page.index("</select>", start)])
    assert "Nom, de Z à A" in sort and "Le plus de GPU libres d'abord" in sort
    assert "descending" not in sort and "décroissant" not in sort
    assert len(re.findall(r">Nom, de A à Z<", sort)) == 1
    assert ">Nom<" not in sort


@pytest.mark.parametrize(
    ("language", "expected", "never"),
    [("en", "(just now)", "0 minutes"), ("de", "(gerade eben)", "vor 0 Minuten")],
)
def test_a_fresh_sync_reads_just_now(snapshot, alice_client, language, expected, never):
    page = alice_client.get(reverse("gpus:inventory"), HTTP_ACCEPT_LANGUAGE=language)
    text = page.content.decode()
    assert expected in text and never not in text


def test_an_older_sync_reads_naturally_in_german(snapshot, alice_client):
    from datetime import timedelta

    from django.utils import timezone

    snapshot.last_synced_at = timezone.now() - timedelta(minutes=5)
    snapshot.save()
    page = alice_client.get(reverse("gpus:inventory"), HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert "(vor 5 Minuten)" in page


def test_times_do_not_double_a_sentences_full_stop(snapshot, alice_client):
    page = alice_client.get(reverse("gpus:inventory"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "data as of" in page
    assert "m.." not in page and "a.m." not in page and "p.m." not in page


def test_one_worker_is_singular(snapshot, alice_client):
    page = alice_client.get(reverse("gpus:my_gpus", args=["tenant-acme"])).content.decode()
    assert "2 per worker \u00d7 1 worker (2 held)" in page
    assert "1 workers" not in page


def test_kubevirt_reasons_are_plain_words_in_the_users_language(snapshot, alice_client):
    url = reverse("gpus:my_gpus", args=["tenant-acme"])
    page = html.unescape(alice_client.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode())
    assert "La machine virtuelle démarre\u00a0: son pod n'est pas encore prêt." in page
    assert "PodNotReady" not in page and "virt-launcher pod is not ready" not in page


def test_column_headers_start_with_a_capital_in_french(snapshot, alice_client):
    url = reverse("gpus:my_gpus", args=["tenant-acme"])
    page = alice_client.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    headers = re.findall(r'<th scope="col"[^>]*>([^<]+)</th>', page)
    assert "Modèle de GPU" in headers
    assert all(h[0].isupper() for h in headers), headers


def test_memory_is_in_go_in_french(alice_client):
    catalog = alice_client.get(reverse("gpus:catalog"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    compare = alice_client.get(reverse("gpus:compare"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "48 Go GDDR6 ECC" in catalog and "48 GB" not in catalog
    assert "80 Go" in compare and " GB" not in compare
    english = alice_client.get(reverse("gpus:compare"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "80 GB" in english


def test_colons_in_french_cards_have_their_space(alice_client):
    catalog = alice_client.get(reverse("gpus:catalog"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Usage typique\u00a0:" in catalog and "Remarque\u00a0:" in catalog


def test_the_advisors_error_is_shown_once(alice_client):
    page = alice_client.get(reverse("gpus:advisor"), {"workload": "bogus"}).content.decode()
    assert page.count("Select a valid choice.") == 1
    fragment = alice_client.get(
        reverse("gpus:advisor"), {"workload": "bogus"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert fragment.count("Select a valid choice.") == 1


def test_french_catalog_notes_keep_their_non_breaking_spaces(alice_client):
    catalog = alice_client.get(reverse("gpus:catalog"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    notes = re.findall(r'<p class="notes">(.*?)</p>', html.unescape(catalog), flags=re.DOTALL)
    assert notes, "the catalog shows no notes"
    bad = [n for n in notes if re.search(r"[^\u00a0\u202f][:;?!](\s|$)", n)]
    assert bad == []
    assert "(362 TFLOPS)\u00a0;" in catalog
