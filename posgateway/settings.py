"""POS Gateway settings: read from the environment in this one place.

No environment at all gives the embedded default (SQLite file + in-memory channel layer);
DATABASE_URL and REDIS_URL switch to PostgreSQL and channels-redis for production.
"""

import datetime as dt
import os
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from exc


def env_int(name: str, default: int) -> int:
    return int(env_float(name, default))


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Security (docs/security.md; the production values are in docs/operations.md) ----------
# Off unless asked for: `make run` sets DEBUG=1, production never does.
DEBUG = env_bool("DEBUG", False)
# The fallback is public (it is in this file) and carries Django's own "django-insecure-"
# prefix: `check --deploy` refuses it, and with DEBUG off a server refuses to start on it or
# without SECRET_KEY (posgateway/asgi.py). manage.py commands and the tests may use it.
DEVELOPMENT_SECRET_KEY = "django-insecure-development-key-set-SECRET_KEY-in-production"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY") or DEVELOPMENT_SECRET_KEY
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# HTTPS: all off by default, so `make run` and the tests work over plain http://127.0.0.1.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# A load balancer's health check may come over plain HTTP: /healthz is never redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Only behind a proxy that sets X-Forwarded-Proto itself (and strips a client's): otherwise any
# client could claim HTTPS.
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Content-Security-Policy on every answer (django-csp): scripts, styles, fonts and images from
# this origin only (the dashboard, the admin and the API docs serve theirs from /static/), no
# inline script or style, no plugin, no framing; data: images for the admin's and Swagger UI's
# icons. `connect-src 'self'` covers the dashboard's own WebSocket (ws:/wss: of this origin).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "axes",
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "terminals",
    "payments",
    "sessions.apps.TerminalSessionsConfig",
    "webhooks",
    "posgateway.webhook_delivery.apps.WebhookDeliveryConfig",
    "posgateway.dashboard.apps.DashboardConfig",
    "posgateway.backoffice.apps.BackofficeConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Near the end, so it sees the debug pages Django makes below it: JSON under /api/,
    # /terminal-api/ (every middleware turns an exception below it into a response).
    "posgateway.rest.base.JsonErrorPagesMiddleware",
    # Last, as django-axes asks: answers a locked-out login 429 (docs/security.md "Logins").
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "posgateway.urls"
ASGI_APPLICATION = "posgateway.asgi.application"

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

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
}
# How long a query waits for a lock another connection holds (SQLite's busy timeout, PostgreSQL's
# lock_timeout) before it fails, and the device is answered "Failed to process message".
DB_LOCK_TIMEOUT_S = env_float("DB_LOCK_TIMEOUT_S", 20)
if DB_LOCK_TIMEOUT_S <= 0:
    raise ImproperlyConfigured(f"DB_LOCK_TIMEOUT_S must be above 0, got {DB_LOCK_TIMEOUT_S:g}")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock up front so two
    # writers queue (busy timeout) instead of failing with "database is locked" on upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": DB_LOCK_TIMEOUT_S,
    }
    DATABASES["default"]["TEST"] = {"NAME": env_str("SQLITE_TEST_NAME") or None}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, health-checking a reused connection at most once a second instead of
    # before every frame's hop (posgateway/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "posgateway.postgresql"
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = (
        f"{_options.get('options', '')} -c lock_timeout={int(DB_LOCK_TIMEOUT_S * 1000)}".strip()
    )
    # Parameters sent apart from the statement, and a statement run 5 times on a connection
    # prepared (psycopg's default): PostgreSQL then skips parsing and planning the hot
    # statements, ~a quarter of its CPU per payment (docs/performance.md). Off behind a pooler
    # in transaction mode that cannot keep prepared statements (PgBouncer < 1.21).
    if env_bool("DB_PREPARED_STATEMENTS", True):
        _options.setdefault("server_side_binding", True)
        _options.setdefault("prepare_threshold", 5)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer --------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    import redis.exceptions

    CHANNEL_LAYERS = {
        "default": {
            # channels-redis, with its blocking pop safe against a cancelled receiver.
            "BACKEND": "posgateway.gateway.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # The redis client raises instead of waiting once its pool is used
                        # up; a reconnect storm needs far more than its default of 100.
                        "max_connections": env_int("REDIS_MAX_CONNECTIONS", 2000),
                        "socket_connect_timeout": 2,
                        # After a Redis restart every pooled connection is dead but looks
                        # idle; retry once on a fresh one instead of failing that request.
                        "retry_on_error": [redis.exceptions.ConnectionError],
                        # channels-redis blocks 5 s in BZPOPMIN waiting for messages; redis-py
                        # 8 defaults socket_timeout to 5 s, which kills a quiet consumer (1011).
                        "socket_timeout": 15,
                    }
                ],
                # One inbox per process holds messages for all its sockets: 100 (the
                # default) silently drops under load. Delivery guarantees come from the
                # database anyway; this only keeps the fast path fast.
                "capacity": env_int("CHANNEL_CAPACITY", 10000),
                "expiry": 60,
                "prefix": env_str("CHANNEL_PREFIX", "posgw"),
            },
        }
    }
    # Django's cache (the REST API's throttle counts) in Redis too, so every process counts
    # together: CACHE_REDIS_URL may name another Redis database (`/1`), else the layer's, under
    # a prefix of its own. Nothing of the gateway ever clears it: Django's RedisCache.clear()
    # empties the whole Redis database, the channel layer's keys included.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env_str("CACHE_REDIS_URL") or REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_PREFIX") or f"{env_str('CHANNEL_PREFIX', 'posgw')}-cache",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 5},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            # Channels' own, with its expiry sweep once a second instead of on every message.
            "BACKEND": "posgateway.gateway.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": env_int("CHANNEL_CAPACITY", 10000), "expiry": 60},
        }
    }
    # One process: Django's default local-memory cache (the throttle counts) is the process's.

# --- Gateway behaviour (contract section 1 and 7) -------------------------------------------
PAYMENT_TIMEOUT_S = env_float("PAYMENT_TIMEOUT_S", 120)
HEARTBEAT_INTERVAL_S = env_float("HEARTBEAT_INTERVAL_S", 30)
HEARTBEAT_TIMEOUT_S = env_float("HEARTBEAT_TIMEOUT_S", 10)
RECONNECT_GRACE_S = env_float("RECONNECT_GRACE_S", 60)
MAX_MESSAGE_BYTES = env_int("MAX_MESSAGE_BYTES", 65536)
# An HTTP request body beyond this is refused (413) while it is read, before any buffering
# (posgateway/core/bodylimit.py); the Terminal API's limit is MAX_MESSAGE_BYTES. A body still
# arriving this long after its headers is cut off (408).
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 1048576)  # 1 MiB
REQUEST_BODY_TIMEOUT_S = env_float("REQUEST_BODY_TIMEOUT_S", 30)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
# How often each process sweeps for timed-out payments, stale sockets and expired grace.
SWEEP_INTERVAL_S = env_float("SWEEP_INTERVAL_S", 1.0)
# A request whose hand-off to its terminal the channel layer refused (Redis down) stays in
# flight and is handed off again this long after, then at doubling intervals up to
# FORWARD_RETRY_MAX_S, by whichever process's sweeper gets to it first, until its deadline.
FORWARD_RETRY_S = env_float("FORWARD_RETRY_S", 0.5)
FORWARD_RETRY_MAX_S = env_float("FORWARD_RETRY_MAX_S", 2.0)
# Unacknowledged results are re-sent on connect for this long.
REDELIVERY_WINDOW_S = env_float("REDELIVERY_WINDOW_S", 24 * 3600)
# A sync Terminal API request is woken through the channel layer when its payment ends; it also
# re-reads the database this long after it began waiting, then at doubling intervals up to 8x
# this (the layer may drop a message).
TERMINAL_API_RECHECK_S = env_float("TERMINAL_API_RECHECK_S", 1.0)
# Flood guards (contract section 7 "Limits"): frames per connection (sustained rate and burst),
# WebSocket handshakes per client address and process, live connections per store.
WS_FRAMES_PER_S = env_float("WS_FRAMES_PER_S", 500)
WS_FRAMES_BURST = env_int("WS_FRAMES_BURST", 1000)
WS_HANDSHAKES_PER_S = env_float("WS_HANDSHAKES_PER_S", 1000)
MAX_CONNECTIONS_PER_STORE = env_int("MAX_CONNECTIONS_PER_STORE", 10000)
# A Terminal API session without a request for this long expires (the terminal is told).
SESSION_MAX_AGE_S = env_float("SESSION_MAX_AGE_S", 1800)
# A display or input request times out this long after its durationMs or maxInputTimeMs.
TERMINAL_REQUEST_TIMEOUT_S = env_float("TERMINAL_REQUEST_TIMEOUT_S", 30)

# --- Webhooks (contract section 11, docs/webhooks.md) ----------------------------------------
# A 2xx answer within this many seconds is delivered.
WEBHOOK_TIMEOUT_S = env_float("WEBHOOK_TIMEOUT_S", 10)
# Seconds between attempts (each jittered by ±10 %): 12 attempts over ~3 days, then failed.
WEBHOOK_RETRY_SCHEDULE_S = [
    float(s)
    for s in env_list(
        "WEBHOOK_RETRY_SCHEDULE_S", "5,60,300,1800,3600,7200,14400,28800,43200,64800,86400"
    )
]
# Plain http:// endpoint URLs (on under DEBUG); otherwise https:// only.
WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", DEBUG)
# Hosts that may resolve to loopback, private, link-local or reserved addresses.
WEBHOOK_ALLOWED_HOSTS = env_list("WEBHOOK_ALLOWED_HOSTS")
# Every server process delivers webhooks; 0 leaves it to `manage.py webhook_worker`.
WEBHOOK_IN_PROCESS = env_bool("WEBHOOK_IN_PROCESS", True)
# Events (with their deliveries and attempts) are deleted this many days after.
WEBHOOK_RETENTION_DAYS = env_float("WEBHOOK_RETENTION_DAYS", 30)
# Fernet keys that encrypt the signing secrets at rest (first encrypts, all decrypt); empty: a
# key derived from SECRET_KEY (and SECRET_KEY_FALLBACKS).
WEBHOOK_ENCRYPTION_KEYS = env_list("WEBHOOK_ENCRYPTION_KEYS")
# A worker's claim on a delivery: another worker takes it over once this has passed.
WEBHOOK_LEASE_S = env_float("WEBHOOK_LEASE_S", 60)
# Attempts in flight at once per endpoint and worker, and per worker in all.
WEBHOOK_CONCURRENCY_PER_ENDPOINT = env_int("WEBHOOK_CONCURRENCY_PER_ENDPOINT", 4)
WEBHOOK_MAX_IN_FLIGHT = env_int("WEBHOOK_MAX_IN_FLIGHT", 64)
# How often an idle worker looks for new events and due deliveries.
WEBHOOK_POLL_INTERVAL_S = env_float("WEBHOOK_POLL_INTERVAL_S", 1.0)
if WEBHOOK_LEASE_S <= WEBHOOK_TIMEOUT_S:
    raise ImproperlyConfigured("WEBHOOK_LEASE_S must be longer than WEBHOOK_TIMEOUT_S")

# --- The dashboard's "Needs attention" -------------------------------------------------------
# A terminal offline while its store is open (Group.opens_at/closes_at) for longer than this;
# a store without opening hours: offline for longer than ATTENTION_OFFLINE_AFTER_S.
ATTENTION_OFFLINE_GRACE_S = env_float("ATTENTION_OFFLINE_GRACE_S", 120)
ATTENTION_OFFLINE_AFTER_S = env_float("ATTENTION_OFFLINE_AFTER_S", 900)
# A payment still in flight this long after its deadline (the sweeper normally ends it at once).
ATTENTION_STUCK_AFTER_S = env_float("ATTENTION_STUCK_AFTER_S", 60)

# --- Auth, i18n, static ---------------------------------------------------------------------
# Every path that sets a password runs these: the admin, `create_staff`, `changepassword`.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("PASSWORD_MIN_LENGTH", 10)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes, its counts in the database every process shares): after
# LOGIN_FAILURE_LIMIT wrong passwords for one username, or from one address, every login
# for that username or from that address is answered 429 for LOGIN_LOCKOUT_S seconds
# (counted from the last failure), whether the password is right or not. The dashboard's
# login page and the admin's are both guarded; a right password resets the counts.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = dt.timedelta(seconds=env_float("LOGIN_LOCKOUT_S", 900))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # no row per successful login: failures are what counts
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = (
    False  # its lines quote the username as typed: no device- or user-typed text raw in logs
)
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# Times to the second in the admin (posgateway/formats/en/formats.py).
FORMAT_MODULE_PATH = ["posgateway.formats"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- REST API (docs/api.md) -----------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: an anonymous request then gets 401 with WWW-Authenticate: Token, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's Token header, checked against the stored digest (terminals/tokens.py).
        "posgateway.rest.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "posgateway.rest.base.PageNumberPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "posgateway.rest.base.exception_handler",
    # Counted in the cache: with REDIS_URL in Redis, shared by every process; without it, in
    # the one process's memory. Generous on purpose: an accountant's script or the test suite
    # must not trip it.
    "DEFAULT_THROTTLE_CLASSES": [
        "posgateway.rest.throttling.UserRateThrottle",
        "posgateway.rest.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("API_THROTTLE_USER", "6000/min"),
        "anon": env_str("API_THROTTLE_ANON", "600/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "POS Gateway API",
    "DESCRIPTION": (
        "REST API over the gateway's stores, devices and payments, with CSV exports and daily "
        "totals for accounting; it reads, and starts refunds of payments. Authenticate with "
        "`Authorization: Token <token>` (`manage.py create_staff` prints one) or a staff login "
        "session. Every error is "
        '`{"error": <HTTP reason phrase>, "message": <text>}`. See docs/api.md.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "posgateway.rest.base.allow_empty_query_values",
    ],
    "ENUM_NAME_OVERRIDES": {
        "TransactionStatusEnum": "payments.models.TransactionStatus",
        "TransactionTypeEnum": "payments.models.TransactionType",
        "DeviceStatusEnum": "terminals.models.DeviceStatus",
        "DeviceTypeEnum": "terminals.models.DeviceType",
        "SessionStatusEnum": "sessions.models.SessionState",
        "SessionOperationTypeEnum": "sessions.models.OperationType",
        "TerminalRequestTypeEnum": "sessions.models.RequestKind",
        "TerminalRequestStatusEnum": "sessions.models.RequestStatus",
        "WebhookEventTypeEnum": "webhooks.models.EventType",
        "WebhookDeliveryStatusEnum": "webhooks.models.DeliveryStatus",
    },
    # The docs UI's assets come from the sidecar package, served by whitenoise: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    # No badge image from validator.swagger.io (a third-party origin the CSP refuses anyway).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    # A key in a logged URL's query string is written as [redacted] (posgateway/core/redact.py).
    "filters": {"redact": {"()": "posgateway.core.redact.RedactSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "posgateway": {"level": LOG_LEVEL},
        "terminals": {"level": LOG_LEVEL},
        "payments": {"level": LOG_LEVEL},
        "sessions": {"level": LOG_LEVEL},
        "webhooks": {"level": LOG_LEVEL},
        "django.channels.server": {"level": env_str("ACCESS_LOG_LEVEL", "WARNING").upper()},
    },
}
