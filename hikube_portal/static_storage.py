"""Static files for `make run` as production serves them: collected, hashed, compressed."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class HashedEvenInDebug(CompressedManifestStaticFilesStorage):
    """WhiteNoise's compressed manifest storage (gzip and brotli copies, content-hashed names),
    with hashed URLs under DEBUG too: Django's manifest storage gives plain names while DEBUG is
    on, which WhiteNoise cannot cache for long. `make run` collects first (STATIC_COLLECTED)."""

    def url(self, name: str | None, force: bool = False) -> str:
        return super().url(name, force=True)
