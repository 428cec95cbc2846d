"""Hikube Portal settings: one file, every deployment-specific value from an environment variable.

The README's configuration table lists each variable. With no variables at all (other than
DEBUG=true) the portal runs embedded: SQLite under var/, Celery over the filesystem broker,
devcluster as the cluster.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from .env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "gpus.web.admin_site.PortalAdminConfig",  # django.contrib.admin with the portal's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_filters",
    "axes",
    # The API's docs page (/api/v1/docs) from the portal's own static files, not a CDN: the
    # Content-Security-Policy allows scripts from 'self' only.
    "ninja",
    # Each app's migrations stay linear: parallel branches conflict in max_migration.txt.
    "django_linear_migrations",
    "gpus.web",
    "gpus.catalog",
    "gpus.tenancy",
    "gpus.accounts",
    "gpus.inventory",
    "gpus.provisioning",
    "gpus.utilization",
    "gpus.capacity",
]

MIDDLEWARE = [
    # First: request ids and timing; answers /livez, /readyz and /metrics itself (gpus/ops).
    "gpus.ops.middleware.ObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy and Permissions-Policy (settings below), DEBUG off.
    "gpus.web.headers.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hikube_portal.urls"
WSGI_APPLICATION = "hikube_portal.wsgi.application"
ASGI_APPLICATION = "hikube_portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "gpus.web.context_processors.navigation",
            ],
        },
    },
]

# Database: DATABASE_URL (postgres://... in production and CI); a SQLite file by default.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and immediate transactions let web, worker and beat share one SQLite file.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so a Celery worker started by a test sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-portal.sqlite3")}
elif DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    # libpq's connect timeout: a database that does not answer fails a request (and /readyz) fast.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT_SECONDS", 5)
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one user from one
# address, that pair is locked out for LOGIN_LOCKOUT_MINUTES. Every failure is logged.
AUTHENTICATION_BACKENDS = [
    "gpus.web.auth.WebLoginThrottle",  # django-axes, for logins over the web
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False  # no banner on every manage.py command; failures are still logged
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "gpus:catalog"
LOGOUT_REDIRECT_URL = "login"

# Sign-in with the platform's identity (OpenID Connect, mozilla-django-oidc), on when OIDC_ISSUER
# is set. Endpoints come from the issuer's /.well-known/openid-configuration unless given.
OIDC_ISSUER = env_str("OIDC_ISSUER").rstrip("/")
OIDC_ENABLED = bool(OIDC_ISSUER)
OIDC_RP_CLIENT_ID = env_str("OIDC_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET")
OIDC_RP_SCOPES = env_str("OIDC_SCOPES", "openid email profile groups")
OIDC_RP_SIGN_ALGO = env_str("OIDC_SIGN_ALGO", "RS256")
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = env_str("OIDC_USERINFO_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_JWKS_ENDPOINT")
OIDC_OP_LOGOUT_ENDPOINT = env_str("OIDC_END_SESSION_ENDPOINT")
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_EMAIL_CLAIM = env_str("OIDC_EMAIL_CLAIM", "email")
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
# Groups whose members are platform admins (Cozystack's own cluster-admin group by default).
OIDC_PLATFORM_ADMIN_GROUPS = env_list("OIDC_PLATFORM_ADMIN_GROUPS", ["cozystack-cluster-admin"])
# Tenant roles that may change things. cozystack v1.1.0 gives create/update/delete on the apps
# to -admin and -super-admin only (cozy:tenant:use adds just the VM console to view).
OIDC_OPERATOR_ROLES = env_list("OIDC_OPERATOR_ROLES", ["admin", "super-admin"])
OIDC_USE_NONCE = True
OIDC_STORE_ID_TOKEN = True  # the id_token_hint of the provider's sign-out
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = env_int("OIDC_SESSION_REFRESH_SECONDS", 900)
OIDC_TIMEOUT = env_float("OIDC_TIMEOUT_SECONDS", 10.0)
LOGIN_REDIRECT_URL_FAILURE = "login"
# Local accounts (username + password): the demo users of `make run`; off on a platform.
LOCAL_LOGIN = env_bool("LOCAL_LOGIN", True)
if not LOCAL_LOGIN:
    AUTHENTICATION_BACKENDS = []
    # No passwords here, so nothing for django-axes to throttle: its "backend missing" check
    # does not apply (a production overlay sets LOCAL_LOGIN=false).
    SILENCED_SYSTEM_CHECKS = ["axes.W003"]
if OIDC_ENABLED:
    AUTHENTICATION_BACKENDS.append("gpus.accounts.oidc.PortalOidcBackend")
    # Re-asks the provider (prompt=none) once the ID token is older than the refresh period:
    # groups removed there take effect then.
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.contrib.auth.middleware.LoginRequiredMiddleware") + 1,
        "gpus.accounts.oidc.SessionRefresh",
    )
if not AUTHENTICATION_BACKENDS:
    raise ImproperlyConfigured("LOCAL_LOGIN=false needs OIDC_ISSUER: nobody could sign in.")
# Writes to the cluster impersonate CLUSTER_USER_PREFIX + the portal user name with the person's
# tenant groups (never a bare name that could be a real Kubernetes user).
CLUSTER_USER_PREFIX = env_str("CLUSTER_USER_PREFIX", "hikube-portal:")

# Languages: French first like Hikube's documentation, English as fallback, German welcome.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("fr", _("French")), ("de", _("German"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
# Our own date formats: 24-hour times, so no "a.m." whose full stop doubles a sentence's.
FORMAT_MODULE_PATH = ["hikube_portal.formats"]
TIME_ZONE = env_str("TIME_ZONE", "Europe/Zurich")
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
]
# Static files: hashed names, gzip and brotli copies, served by WhiteNoise with a year's
# caching (immutable). `make run` collects them too (STATIC_COLLECTED): DEBUG then serves the
# same way instead of re-reading the sources uncompressed and uncached.
STATIC_COLLECTED = env_bool("STATIC_COLLECTED", False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG and not STATIC_COLLECTED
            else "hikube_portal.static_storage.HashedEvenInDebug"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
if DEBUG and STATIC_COLLECTED:
    WHITENOISE_AUTOREFRESH = False
    WHITENOISE_USE_FINDERS = False

# Security: strict by default whenever DEBUG is off (manage.py check --deploy stays clean).
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads no cookie: the token travels in hx-headers on <body>.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy: scripts only from the portal's own files, nothing evaluated, no
# plugin, no framing; styles may be inline (Plotly and htmx insert <style>; see gpus.web.headers).
# Sign-in and sign-out forms may go on to the identity provider (Chrome applies form-action to
# the redirects that follow a form).
_FORM_ACTION = " ".join(
    ["'self'", *(["/".join(OIDC_ISSUER.split("/")[:3])] if OIDC_ISSUER else [])]
)
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    f"base-uri 'self'; form-action {_FORM_ACTION}; frame-ancestors 'none'",
)
# Powerful browser features the portal never uses are off for it and anything it embeds.
PERMISSIONS_POLICY = env_str(
    "PERMISSIONS_POLICY",
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
    "payment=(), usb=(), clipboard-write=(self)",
)
# A request body past this is refused (400) before a form reads it: every form field is bounded
# far below (provisioning.forms), the guest agent's posts by METRICS_AGENT_MAX_BYTES.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_BYTES", 512 * 1024)
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    # The container health check speaks plain HTTP to the port.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    if env_bool("SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Celery: Redis in production; by default the filesystem broker, so embedded mode needs no server.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", f"file://{VAR_DIR / 'celery' / 'results'}")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue = VAR_DIR / "celery" / "queue"
    _processed = VAR_DIR / "celery" / "processed"
    _control = VAR_DIR / "celery" / "control"  # fanout (inspect, ping); cwd by default
    # kombu's filesystem transport, writing each message atomically (see hikube_portal/broker.py).
    CELERY_BROKER_TRANSPORT = "hikube_portal.broker:Transport"
    for _folder in (_queue, _processed, _control, VAR_DIR / "celery" / "results"):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "processed_folder": str(_processed),
        "control_folder": str(_control),
        "store_processed": False,
        "polling_interval": 0.2,
    }
elif CELERY_RESULT_BACKEND.startswith("file://"):
    (VAR_DIR / "celery" / "results").mkdir(parents=True, exist_ok=True)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
INVENTORY_SYNC_SECONDS = env_float("INVENTORY_SYNC_SECONDS", 30.0)
# Pages warn that live figures are stale past this age (default: three sync intervals).
INVENTORY_STALE_SECONDS = env_float("INVENTORY_STALE_SECONDS", 3 * INVENTORY_SYNC_SECONDS)
# Retries one sync may spend on failed requests, all pages together; then it gives up.
INVENTORY_SYNC_RETRY_BUDGET = env_int("INVENTORY_SYNC_RETRY_BUDGET", 3)
# Whole-sync retries of a failed task (after the cluster's backoff), then the beat takes over.
INVENTORY_SYNC_TASK_RETRIES = env_int("INVENTORY_SYNC_TASK_RETRIES", 2)
# A failing cluster's syncs back off (interval x 2^failures) up to this many seconds.
INVENTORY_SYNC_BACKOFF_MAX_SECONDS = env_float("INVENTORY_SYNC_BACKOFF_MAX_SECONDS", 600.0)
# How often live fragments (inventory, My GPUs) poll the portal, in seconds.
PAGE_REFRESH_SECONDS = env_int("PAGE_REFRESH_SECONDS", 30)
# Operations (provisioning): how often the batched poller looks, when a lost task is re-enqueued,
# how long a claimed apply may run before another worker may take it, and when to give up.
# A sweep of a cluster holds its lock (Redis) so sweeps never overlap: a tick that finds it
# held is skipped. The lease frees the lock of a worker killed mid-sweep.
OPERATION_POLL_SECONDS = env_float("OPERATION_POLL_SECONDS", 1.0)
OPERATION_POLL_LEASE_SECONDS = env_float("OPERATION_POLL_LEASE_SECONDS", 120.0)
OPERATION_RECONCILE_SECONDS = env_float("OPERATION_RECONCILE_SECONDS", 10.0)
OPERATION_RECONCILE_AFTER_SECONDS = env_float("OPERATION_RECONCILE_AFTER_SECONDS", 10.0)
OPERATION_LEASE_SECONDS = env_float("OPERATION_LEASE_SECONDS", 60.0)
OPERATION_TIMEOUT_SECONDS = env_int("OPERATION_TIMEOUT_SECONDS", 900)
OPERATION_NODE_GROUP_TIMEOUT_SECONDS = env_int("OPERATION_NODE_GROUP_TIMEOUT_SECONDS", 1800)
OPERATION_RETRY_MAX_SECONDS = env_float("OPERATION_RETRY_MAX_SECONDS", 30.0)
OPERATION_UNSCHEDULABLE_GRACE_SECONDS = env_float("OPERATION_UNSCHEDULABLE_GRACE_SECONDS", 120.0)
# A Helm install/upgrade failure that may clear by itself (helm-controller retries forever) is
# "retrying" this long before the operation fails (v1.1 HelmReleases retry every 5 minutes).
OPERATION_HELM_RETRY_GRACE_SECONDS = env_float("OPERATION_HELM_RETRY_GRACE_SECONDS", 600.0)
# A VM held back for its disk: one extra poll this soon after the disk is sent (an empty or
# cached disk is Ready in seconds), so the VM need not wait a whole poll interval for it.
OPERATION_DISK_RECHECK_SECONDS = env_float("OPERATION_DISK_RECHECK_SECONDS", 0.5)
# How often an operation page asks the portal for its status while it is in flight.
OPERATION_PAGE_POLL_SECONDS = env_float("OPERATION_PAGE_POLL_SECONDS", 2.0)
# Per tenant: operations submitted per minute, and operations waiting for a worker (pending or
# applying) at once, so one tenant's flood neither fills the queue nor starves the others.
OPERATION_RATE_PER_MINUTE = env_int("OPERATION_RATE_PER_MINUTE", 30)
OPERATION_TENANT_MAX_WAITING = env_int("OPERATION_TENANT_MAX_WAITING", 50)
CELERY_BEAT_SCHEDULE = {
    "sync-inventory": {
        "task": "inventory.sync_all_inventories",
        "schedule": INVENTORY_SYNC_SECONDS,
        "options": {"expires": INVENTORY_SYNC_SECONDS},
    },
    "poll-operations": {
        "task": "provisioning.poll_operations",
        "schedule": OPERATION_POLL_SECONDS,
        "options": {"expires": OPERATION_POLL_SECONDS},
    },
    "reconcile-operations": {
        "task": "provisioning.reconcile_operations",
        "schedule": OPERATION_RECONCILE_SECONDS,
        "options": {"expires": OPERATION_RECONCILE_SECONDS},
    },
    "refresh-served-schemas": {
        "task": "inventory.refresh_all_served_schemas",
        "schedule": 600.0,
        "options": {"expires": 600.0},
    },
}
# GPU telemetry: collect and roll up (settings below; the beat entries are added there).

# The default cluster: a kubeconfig and context (devcluster's by default), or in-cluster config.
CLUSTER_NAME = env_str("CLUSTER_NAME", "devcluster")
CLUSTER_KUBECONFIG = env_str("CLUSTER_KUBECONFIG", str(VAR_DIR / "devcluster" / "kubeconfig"))
CLUSTER_CONTEXT = env_str("CLUSTER_CONTEXT", "admin")
CLUSTER_IN_CLUSTER = env_bool("CLUSTER_IN_CLUSTER", False)
CLUSTER_TIMEOUT_SECONDS = env_float("CLUSTER_TIMEOUT_SECONDS", 10.0)
CLUSTER_QPS = env_float("CLUSTER_QPS", 10.0)
CLUSTER_BURST = env_int("CLUSTER_BURST", 20)

# Metrics (GPU utilization): `direct` scrapes DCGM exporters (targets from METRICS_SD_URL, an HTTP
# service-discovery URL, or METRICS_TARGETS); `prometheus` reads a Prometheus-compatible query API
# (Prometheus, VictoriaMetrics, vmselect). A MetricSource row per cluster overrides these.
METRICS_SOURCE = env_str("METRICS_SOURCE", "direct")
PROMETHEUS_URL = env_str("PROMETHEUS_URL", "http://127.0.0.1:9090")
METRICS_SD_URL = env_str("METRICS_SD_URL", "http://127.0.0.1:6443/dcgm/targets?include=vms")
METRICS_TARGETS = env_str("METRICS_TARGETS", "")
METRICS_BEARER_TOKEN = env_str("METRICS_BEARER_TOKEN", "")
METRICS_USERNAME = env_str("METRICS_USERNAME", "")
METRICS_PASSWORD = env_str("METRICS_PASSWORD", "")
METRICS_TIMEOUT_SECONDS = env_float("METRICS_TIMEOUT_SECONDS", 10.0)
METRICS_COLLECT_SECONDS = env_float("METRICS_COLLECT_SECONDS", 60.0)
METRICS_ROLLUP_SECONDS = env_float("METRICS_ROLLUP_SECONDS", 60.0)
# Allocated GPUs busy below this percentage for this long are listed as idle.
METRICS_IDLE_THRESHOLD = env_float("METRICS_IDLE_THRESHOLD", 5.0)
METRICS_IDLE_MINUTES = env_int("METRICS_IDLE_MINUTES", 60)
METRICS_RAW_RETENTION_HOURS = env_int("METRICS_RAW_RETENTION_HOURS", 48)
METRICS_5M_RETENTION_DAYS = env_int("METRICS_5M_RETENTION_DAYS", 30)
METRICS_1H_RETENTION_DAYS = env_int("METRICS_1H_RETENTION_DAYS", 365)
# Guest agents: the URL VMs post to, the smallest interval between posts, the largest body.
METRICS_AGENT_URL = env_str("METRICS_AGENT_URL", "http://127.0.0.1:8000/metrics/agent/")
METRICS_AGENT_MIN_INTERVAL = env_float("METRICS_AGENT_MIN_INTERVAL", 20.0)
METRICS_AGENT_MAX_BYTES = env_int("METRICS_AGENT_MAX_BYTES", 65536)
# Per-GPU history in query-API mode: read by a task, kept in the cache this long (seconds).
METRICS_RANGE_CACHE_SECONDS = env_int("METRICS_RANGE_CACHE_SECONDS", 60)

# Django's cache: Redis (CACHE_URL, else REDIS_URL) in production and CI; embedded, a folder
# under VAR_DIR, which the web and the (separate) worker process share (locmem would not).
CACHE_URL = env_str("CACHE_URL", "") or env_str("REDIS_URL", "")
if CACHE_URL:
    CACHES = {
        "default": {
            # Redis' RedisCache, with an outage read as a miss (hikube_portal/cache.py).
            "BACKEND": "hikube_portal.cache.TolerantRedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "hk-cache",
            "OPTIONS": {"socket_timeout": 5, "socket_connect_timeout": 5},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
# The client-side rate limit of each cluster (CLUSTER_QPS, CLUSTER_BURST), shared by every worker
# process through this Redis; empty (embedded mode, no Redis): each process keeps its own.
CLUSTER_RATE_LIMIT_URL = env_str("CLUSTER_RATE_LIMIT_URL", "") or CACHE_URL
CELERY_BEAT_SCHEDULE |= {
    "collect-metrics": {
        "task": "utilization.collect_all_metrics",
        "schedule": METRICS_COLLECT_SECONDS,
        "options": {"expires": METRICS_COLLECT_SECONDS},
    },
    "rollup-metrics": {
        "task": "utilization.rollup_metrics",
        "schedule": METRICS_ROLLUP_SECONDS,
        "options": {"expires": METRICS_ROLLUP_SECONDS},
    },
}

# Capacity history (gpus/capacity): samples at each sync, rolled up hourly and daily.
CAPACITY_ROLLUP_SECONDS = env_float("CAPACITY_ROLLUP_SECONDS", 300.0)
CAPACITY_RAW_RETENTION_DAYS = env_int("CAPACITY_RAW_RETENTION_DAYS", 14)
CAPACITY_HOURLY_RETENTION_DAYS = env_int("CAPACITY_HOURLY_RETENTION_DAYS", 90)
CAPACITY_DAILY_RETENTION_DAYS = env_int("CAPACITY_DAILY_RETENTION_DAYS", 1830)
# GPU-hours between two syncs are credited for at most this long (a cluster that was unreachable
# for a day is not billed a day of what it held before).
CAPACITY_USAGE_GAP_SECONDS = env_float("CAPACITY_USAGE_GAP_SECONDS", 900.0)
CELERY_BEAT_SCHEDULE |= {
    "rollup-capacity": {
        "task": "capacity.rollup_history",
        "schedule": CAPACITY_ROLLUP_SECONDS,
        "options": {"expires": CAPACITY_ROLLUP_SECONDS},
    },
}
# Notifications by email: Django's email backend (the console's in debug, none otherwise unless
# EMAIL_BACKEND is set), and the portal's address for the links in them.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.dummy.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "hikube-portal@localhost")
PORTAL_BASE_URL = env_str("PORTAL_BASE_URL", "http://127.0.0.1:8000")

# The portal's own health and metrics (gpus/ops): /readyz waits this long for the database and
# the broker; /metrics answers only with this bearer token (404 while it is unset).
HEALTH_CHECK_TIMEOUT_SECONDS = env_float("HEALTH_CHECK_TIMEOUT_SECONDS", 2.0)
PORTAL_METRICS_TOKEN = env_str("PORTAL_METRICS_TOKEN", "")

# Logs: plain text, or one JSON object per line (LOG_FORMAT=json) with the request id, the
# operation id and the Celery task id where there is one (gpus/web/logs.py).
LOG_FORMAT = env_str("LOG_FORMAT", "text").lower()
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use text or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "gpus.web.logs.ContextFilter"}},
    "formatters": {"json": {"()": "gpus.web.logs.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context"],
            **({"formatter": "json"} if LOG_FORMAT == "json" else {}),
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"kubernetes": {"level": "WARNING"}, "urllib3": {"level": "ERROR"}},
}
