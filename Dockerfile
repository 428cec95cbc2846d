# The portal's image: web (gunicorn), Celery worker and beat, and devcluster (docker-compose.yml).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gettext openssl \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# Static files collected with the production settings (DEBUG off), so the manifest exists.
RUN bin/build-assets
EXPOSE 8000
CMD ["gunicorn", "hikube_portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "30"]
