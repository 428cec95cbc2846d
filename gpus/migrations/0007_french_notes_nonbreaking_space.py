"""French catalog notes: a non-breaking space before ":" ";" "?" "!", as French typography wants
(0002 seeded them with plain spaces, which a narrow screen breaks before the colon)."""

import re

from django.db import migrations

BEFORE_PUNCTUATION = re.compile(r"[ \u00a0]*([:;?!])(?=\s|$)")


def fix(text: str) -> str:
    return BEFORE_PUNCTUATION.sub("\u00a0\\1", text)


def forwards(apps, schema_editor):
    GpuModel = apps.get_model("gpus", "GpuModel")
    for model in GpuModel.objects.exclude(notes={}):
        french = (model.notes or {}).get("fr")
        if french and fix(french) != french:
            model.notes = {**model.notes, "fr": fix(french)}
            model.save(update_fields=["notes"])


class Migration(migrations.Migration):
    dependencies = [("gpus", "0006_gpu_telemetry")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
