"""Settings for the ward portal, read from the environment only.

Three modes, chosen by ``PORTAL_MODE``:

* ``production`` (the default, so a forgotten variable fails safe): refuses to start with
  DEBUG on, a missing or development SECRET_KEY, empty ALLOWED_HOSTS, or no DATABASE_URL /
  REDIS_URL.
* ``development``: the embedded demo. Without DATABASE_URL it uses SQLite; without REDIS_URL
  it uses the in-memory channel layer and runs Celery tasks in-process.
* ``test``: used by the test suite (see ``config/test_settings.py``), MariaDB and Redis.

Every variable is documented in ``.env.example``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from config.collector import THRESHOLDS_DEFAULT, thresholds_parse

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env is a convenience for development; in production the process environment rules.
env.read_env(BASE_DIR / ".env", overwrite=False)

PORTAL_MODE: str = env.str("PORTAL_MODE", default="production")
if PORTAL_MODE not in {"production", "development", "test"}:
    raise ImproperlyConfigured(
        f"PORTAL_MODE must be production, development or test, not {PORTAL_MODE!r}"
    )
IS_PRODUCTION = PORTAL_MODE == "production"

# The one development key. Production refuses it, so it can never protect real sessions.
DEVELOPMENT_SECRET_KEY = "development-only-secret-key-never-use-in-production-0123456789"  # noqa: S105


def _secret_key() -> str:
    key_file = env.str("SECRET_KEY_FILE", default="")
    if key_file:
        return Path(key_file).read_text(encoding="utf-8").strip()
    return env.str("SECRET_KEY", default="" if IS_PRODUCTION else DEVELOPMENT_SECRET_KEY)


SECRET_KEY = _secret_key()
DEBUG: bool = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS",
    default=[] if IS_PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"],
)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

DATABASE_URL: str = env.str(
    "DATABASE_URL", default="" if IS_PRODUCTION else f"sqlite:///{BASE_DIR / 'var/portal.sqlite3'}"
)
REDIS_URL: str = env.str("REDIS_URL", default="")


def _refuse_unsafe_production() -> None:
    problems = []
    if DEBUG:
        problems.append("DEBUG must be off")
    if not SECRET_KEY or SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50:
        problems.append(
            "SECRET_KEY (or SECRET_KEY_FILE) must hold a random secret of 50+ characters"
        )
    if not ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must name the hosts the portal is served as")
    if not DATABASE_URL.startswith("mysql"):
        problems.append("DATABASE_URL must point at MariaDB (mysql://...)")
    if not REDIS_URL:
        problems.append("REDIS_URL must point at Redis")
    if problems:
        raise ImproperlyConfigured(
            "Refusing to start in production mode: " + "; ".join(problems) + "."
        )


if IS_PRODUCTION:
    _refuse_unsafe_production()

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    # OpenAPI for the records API; the sidecar serves Swagger UI and ReDoc from our own static
    # files (hospitals run on closed networks and the CSP allows only 'self').
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "auditlog",
    "patients",
    "monitoring",
    "alerts",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The portal serves its own scripts, styles and fonts: hospitals run on closed networks.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Records who changed what (and from which address) for every audited model.
    "auditlog.middleware.AuditlogMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it answers locked-out logins.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # Refuses logins for a username and address after repeated failures (password guessing).
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT: int = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("LOGIN_LOCKOUT_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Behind a reverse proxy the client address is in X-Forwarded-For (set PORTAL_PROXY_COUNT).
AXES_IPWARE_PROXY_COUNT: int = env.int("PORTAL_PROXY_COUNT", default=0)
AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]

# Browser security. Every script, style and font is the portal's own (no CDN), so the
# Content-Security-Policy allows only 'self'; WebSockets to the same host are 'self' too.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
if IS_PRODUCTION:
    # TLS ends at the hospital's reverse proxy, which sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Probes and scrapers inside the cluster speak plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

# Change history (django-auditlog): models register in their app's ready(); the addresses
# recorded follow the same proxy rule as the access log.
AUDITLOG_INCLUDE_ALL_MODELS = False

# Idle sessions expire on ordinary pages after this long without a request; an open ward
# dashboard keeps its session alive (it calls /accounts/keepalive/ while connected).
SESSION_COOKIE_AGE: int = env.int("SESSION_IDLE_TIMEOUT_SECONDS", default=30 * 60)
SESSION_SAVE_EVERY_REQUEST = True

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = env.db_url_config(url)
    password_file = env.str("DATABASE_PASSWORD_FILE", default="")
    if password_file:
        # A secret file (containers) instead of a password inside DATABASE_URL.
        config["PASSWORD"] = Path(password_file).read_text(encoding="utf-8").strip()
    config["CONN_HEALTH_CHECKS"] = True
    # Persistent connections leak under ASGI (Django ticket 33497): each request's sync part
    # runs in a fresh thread. Only long-lived threads (Celery, the ingestion writers) reuse.
    config["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
    if config["ENGINE"] == "django.db.backends.mysql":
        config["OPTIONS"] = {
            "charset": "utf8mb4",
            "isolation_level": "read committed",
            # Strict mode turns silent truncation into errors; UTC so raw SQL agrees with
            # Django, which stores naive UTC datetimes on MariaDB.
            "init_command": (
                "SET SESSION sql_mode='STRICT_TRANS_TABLES,STRICT_ALL_TABLES,NO_ZERO_IN_DATE,"
                "NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION',"
                " time_zone='+00:00'"
            ),
        }
        config["TEST"] = {
            "NAME": env.str("TEST_DATABASE_NAME", default=f"test_{config['NAME']}"),
            "CHARSET": "utf8mb4",
            "COLLATION": "utf8mb4_unicode_ci",
        }
    elif config["ENGINE"] == "django.db.backends.sqlite3":
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
        }
    return config


DATABASES = {"default": _database(DATABASE_URL)}
# A read replica for the records API (docs/scaling.md): off unless DATABASE_REPLICA_URL is set.
DATABASE_REPLICA_URL: str = env.str("DATABASE_REPLICA_URL", default="")
READ_REPLICA_ALIAS: str | None = None
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = _database(DATABASE_REPLICA_URL)
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
    READ_REPLICA_ALIAS = "replica"
DATABASE_ROUTERS = ["config.routers.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Key prefix of the channel layer and the ward event logs in Redis (several portals may share
# one Redis).
CHANNEL_LAYER_PREFIX: str = env.str("CHANNEL_LAYER_PREFIX", default="portal")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="portal"),
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": CHANNEL_LAYER_PREFIX,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery. Without a broker (the embedded demo) tasks run in-process.
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_TIME_LIMIT = 60
CELERY_TASK_SOFT_TIME_LIMIT = 50
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# Celery's Django fixup closes the database connection around every task unless told to reuse
# it; reuse raised one-query tasks from ~615/s to ~820–900/s here (perf-facts.md).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Technical alarms (device offline / back) and escalation.
    "alerts-tick": {"task": "alerts.tasks.alerts_tick", "schedule": 5.0},
    # Device messages the normal path never evaluated (broker was down, worker lost).
    "evaluation-catch-up": {"task": "alerts.tasks.evaluation_catch_up", "schedule": 10.0},
}

# Device ingestion (monitoring/api.py, monitoring/writer.py).
INGEST_WRITER_THREADS: int = env.int("INGEST_WRITER_THREADS", default=4)
# Transactions of device messages in progress at once; messages arriving while all are busy
# are stored together by the next one to finish (at most INGEST_WRITER_THREADS).
INGEST_WRITE_LANES: int = env.int("INGEST_WRITE_LANES", default=2)
INGEST_RATE_PER_SECOND: float = env.float("INGEST_RATE_PER_SECOND", default=10.0)
INGEST_BURST: float = env.float("INGEST_BURST", default=30.0)
INGEST_MAX_PENDING: int = env.int("INGEST_MAX_PENDING", default=2000)
# Dashboard WebSockets' database threads (portal/dbthreads.py): logins, snapshots, audit rows.
DASHBOARD_DB_THREADS: int = env.int("DASHBOARD_DB_THREADS", default=4)
# How often each ward's newest vitals are pushed to its dashboards (monitoring/events.py):
# the longest a reading waits before it can reach a screen; every open dashboard receives one
# frame per interval.
VITALS_PUSH_INTERVAL_SECONDS: float = env.float("VITALS_PUSH_INTERVAL_SECONDS", default=0.25)
# The garbage collector's thresholds in the server processes (daphne, uvicorn, Celery workers):
# why 50,000 first, in config/collector.py. "default" keeps CPython's (700, 10, 10).
GC_THRESHOLDS: tuple[int, int, int] | None = thresholds_parse(
    env.str("GC_THRESHOLDS", default=",".join(map(str, THRESHOLDS_DEFAULT)))
)
# With those thresholds, a full collection every this many seconds (config/collector.py);
# None with CPython's, which need no clock.
_gc_full_every: float = env.float("GC_FULL_COLLECTION_SECONDS", default=60.0)
if not 1.0 <= _gc_full_every <= 3600.0:
    raise ImproperlyConfigured("GC_FULL_COLLECTION_SECONDS must be between 1 and 3600")
GC_FULL_COLLECTION_SECONDS: float | None = _gc_full_every if GC_THRESHOLDS is not None else None

# Prometheus metrics (/metrics): from these networks, or with "Authorization: Bearer <token>".
METRICS_ALLOWED_NETWORKS: list[str] = env.list(
    "METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"]
)
METRICS_TOKEN: str = env.str("METRICS_TOKEN", default="")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if PORTAL_MODE == "test":
    # Hashing dominates a suite that logs users in; never reachable in production mode.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-gb"
USE_I18N = True
USE_TZ = True
TIME_ZONE = "UTC"
# How times are shown to clinicians; storage is always UTC.
DISPLAY_TIME_ZONE: str = env.str("DISPLAY_TIME_ZONE", default="UTC")

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Production serves the collected, hashed files (cacheable forever); development and
        # tests serve straight from the apps' static folders.
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if IS_PRODUCTION
        else "whitenoise.storage.CompressedStaticFilesStorage",
    },
}
WHITENOISE_USE_FINDERS = not IS_PRODUCTION

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portal:ward-list"
LOGOUT_REDIRECT_URL = "login"

LOG_FORMAT: str = env.str("LOG_FORMAT", default="json" if IS_PRODUCTION else "plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.observability.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Request logs carry URLs, and URLs can carry identifiers; warnings only.
        "django.request": {"level": "WARNING"},
        "django.server": {"level": "WARNING"},
        # daphne's access log would repeat every device post; errors only.
        "daphne": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "patients.api_access.ApiTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "patients.api_access.TokenScopes",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["patients.api_access.PerCredentialThrottle"],
    "DEFAULT_THROTTLE_RATES": {"credential": env.str("API_THROTTLE_RATE", default="600/min")},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "config.api_errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The records API's OpenAPI document (/api/schema/), Swagger UI (/api/docs/), ReDoc
# (/api/redoc/); see config/openapi.py.
SPECTACULAR_SETTINGS = {
    "TITLE": "Ward portal records API",
    "DESCRIPTION": (
        "Wards, beds, patients, admissions, devices, observations, alerts and alert rules. "
        "Authenticate with a session or `Authorization: Token <token>` (scoped: read, "
        "acknowledge, write); bedside devices post to `/api/v1/ingest/` with "
        "`Authorization: Device <token>` and nothing else. Errors are "
        '`{"code", "detail", "fields"?}`. Every read of a patient\'s records is audited.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Docstrings are for developers; each operation states its own summary and description.
    "DISABLE_DOCSTRING_DESCRIPTIONS": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "PriorityEnum": "alerts.models.Priority",
        "AlertStateEnum": "alerts.models.Alert.State",
        "AlertRuleKindEnum": "alerts.models.AlertRule.Kind",
        "VitalCodeEnum": "config.openapi.VITAL_CODES",
        "StaffEnteredCodeEnum": "config.openapi.STAFF_ENTERED_CODES",
    },
    "PREPROCESSING_HOOKS": ["config.openapi.records_api_only"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.openapi.add_device_ingestion",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
