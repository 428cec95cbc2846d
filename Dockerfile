# The portal's image: web (gunicorn), Celery worker and beat, and devcluster (docker-compose.yml).
# It runs as an unprivileged user (uid 10001) and writes only under VAR_DIR and /tmp, so it runs
# with a read-only root filesystem (deploy/ mounts emptyDirs there).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gettext openssl \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/var/lib/portal
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# Static files collected with the production settings (DEBUG off), so the manifest exists.
RUN bin/build-assets && rm -rf /var/lib/portal
# The user, and the folders it writes (docker compose's named volumes copy their ownership).
RUN groupadd --system --gid 10001 portal \
 && useradd --system --uid 10001 --gid portal --home-dir /var/lib/portal --no-create-home portal \
 && mkdir -p /var/lib/portal /shared \
 && chown portal:portal /var/lib/portal /shared
USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "-c", "python:hikube_portal.gunicorn_conf", "hikube_portal.wsgi:application"]
