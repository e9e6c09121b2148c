"""Settings read from the environment.

With no environment at all Odock runs embedded: a SQLite file under ``var/``, an
in-process state store and Celery tasks run eagerly. ``DATABASE_URL`` and ``REDIS_URL``
switch to PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("ODOCK_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    """Strict boolean env parsing: anything but true/false is a configuration error."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def env_secret(name: str) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (docker secrets)."""
    if os.environ.get(name):
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return None


def _local_secret(filename: str) -> str:
    """Embedded default: a random secret generated once and kept under var/."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / filename
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("ODOCK_DEBUG", False)
SECRET_KEY = env_secret("DJANGO_SECRET_KEY") or _local_secret("secret_key")
# Keys that encrypt provider credentials at rest (Fernet). Comma-separated: the first
# encrypts, all decrypt, so keys can be rotated.
ODOCK_ENCRYPTION_KEYS = [
    k.strip()
    for k in (env_secret("ODOCK_ENCRYPTION_KEYS") or _local_secret("encryption_key")).split(",")
    if k.strip()
]
# Ed25519 key (base64 of the 32-byte seed) that signs audit-chain checkpoints. Losing it
# does not break verification of the hash chain, only of later signatures.
ODOCK_AUDIT_SIGNING_KEY = env_secret("ODOCK_AUDIT_SIGNING_KEY") or _local_secret(
    "audit_signing_key"
)
# Pepper for virtual-key digests; changing it invalidates every issued key.
ODOCK_KEY_PEPPER = env_secret("ODOCK_KEY_PEPPER") or SECRET_KEY

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ODOCK_ALLOWED_HOSTS", "*").split(",")]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("ODOCK_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",  # serves the API docs' Swagger files locally (no CDN)
    "apps.core",
    "apps.tenancy",
    "apps.keys",
    "apps.providers",
    "apps.policies",
    "apps.configlog",
    "apps.audit",
    "apps.api",
    "apps.reports",
    "apps.gateway",
    "apps.compliance",
    "apps.dashboard",
    "apps.guardrails",
    "apps.mcp",
    "apps.responses",
    "apps.identity",
    "apps.portal",
    "apps.scim",
    "apps.sso",
    "apps.onboarding",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Actor, request id and address of configuration changes (the change trail).
    "apps.compliance.middleware.ChangeContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "odock.urls"
ASGI_APPLICATION = "odock.asgi.application"

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

DATABASE_URL = os.environ.get("DATABASE_URL", "")
# How long the gateway waits for PostgreSQL before it treats it as away (seconds): opening
# a connection, and each round trip of its own database threads (audit writer, snapshot
# poller, alerts, MCP policy), client-side and as their sessions' statement_timeout. Well
# under the 10 s a durable response waits for its audit record, so a stalled database
# sends records to the spool instead.
ODOCK_DB_TIMEOUT_SECONDS = float(os.environ.get("ODOCK_DB_TIMEOUT_SECONDS", "5"))
# statement_timeout of every other session (admin, API, Celery, manage.py); 0: none.
ODOCK_DB_STATEMENT_TIMEOUT_SECONDS = float(
    os.environ.get("ODOCK_DB_STATEMENT_TIMEOUT_SECONDS", "300")
)


def postgres_options(timeout: float, statement_timeout: float) -> dict[str, object]:
    """libpq parameters that bound every wait on PostgreSQL: connecting (libpq's minimum
    is 2 s), a peer that stopped acknowledging (TCP keepalives on idle connections, and
    tcp_user_timeout on unacknowledged data), and a statement on the server. A server that
    still acknowledges but never answers is left to ``apps.core.postgres``."""
    options: dict[str, object] = {
        "connect_timeout": max(2, math.ceil(timeout)),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 3,
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout * 1000),
    }
    if statement_timeout > 0:
        options["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
    return options


if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["ENGINE"] = "apps.core.postgres"
        # Parameters in the URL's query string (``?keepalives_idle=30``) win.
        DATABASES["default"]["OPTIONS"] = {
            **postgres_options(ODOCK_DB_TIMEOUT_SECONDS, ODOCK_DB_STATEMENT_TIMEOUT_SECONDS),
            **DATABASES["default"].get("OPTIONS", {}),
        }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "odock.sqlite3",
            "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_TIMEZONE = "UTC"
# The periodic jobs (odock/celery.py's beat schedule) run inside the gateway process when
# no beat runs them: on by default exactly in the embedded mode (no REDIS_URL, so no
# worker); the roll-ups then run every ODOCK_SCHEDULER_SECONDS (apps/core/scheduler.py).
ODOCK_SCHEDULER = env_bool("ODOCK_SCHEDULER", not REDIS_URL)
ODOCK_SCHEDULER_SECONDS = float(os.environ.get("ODOCK_SCHEDULER_SECONDS", "30"))
if ODOCK_SCHEDULER_SECONDS <= 0:
    raise ValueError("ODOCK_SCHEDULER_SECONDS must be positive")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("ODOCK_STATIC_ROOT", VAR_DIR / "static"))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Generated files (evidence packs), served only through staff-only admin views.
MEDIA_ROOT = Path(os.environ.get("ODOCK_MEDIA_ROOT", VAR_DIR / "media"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("ODOCK_LOG_LEVEL", "INFO")},
}

# --- Gateway -------------------------------------------------------------------------
# How often each gateway process checks the configuration version (seconds).
ODOCK_SNAPSHOT_POLL_SECONDS = float(os.environ.get("ODOCK_SNAPSHOT_POLL_SECONDS", "1.0"))
# The last good policy snapshot, encrypted, for a gateway started while the database is
# away. Empty: none kept (such a gateway then answers 503 until the database answers).
_snapshot_file = os.environ.get("ODOCK_SNAPSHOT_FILE", str(VAR_DIR / "policy-snapshot"))
ODOCK_SNAPSHOT_FILE = Path(_snapshot_file) if _snapshot_file else None
# Upstream connection and read timeout (seconds): a non-streaming answer, or each read
# of a stream.
ODOCK_UPSTREAM_TIMEOUT_SECONDS = float(os.environ.get("ODOCK_UPSTREAM_TIMEOUT_SECONDS", "60"))
# Upstream attempts per request (across deployments) and the whole request's deadline.
ODOCK_MAX_ATTEMPTS = int(os.environ.get("ODOCK_MAX_ATTEMPTS", "3"))
ODOCK_REQUEST_DEADLINE_SECONDS = float(os.environ.get("ODOCK_REQUEST_DEADLINE_SECONDS", "120"))
# Per upstream attempt (a stream: until its first byte); a model's own setting wins.
# Empty: only the upstream timeout above bounds an attempt.
ODOCK_ATTEMPT_TIMEOUT_SECONDS = (
    float(os.environ["ODOCK_ATTEMPT_TIMEOUT_SECONDS"])
    if os.environ.get("ODOCK_ATTEMPT_TIMEOUT_SECONDS")
    else None
)
# Audit records: durable before a response's last byte (true) or written behind it (false);
# the spool keeps records on local disk while the database is away; chains are sealed into
# signed checkpoints this often.
ODOCK_AUDIT_DURABLE = env_bool("ODOCK_AUDIT_DURABLE", True)
ODOCK_AUDIT_SPOOL_DIR = Path(os.environ.get("ODOCK_AUDIT_SPOOL_DIR", VAR_DIR / "audit-spool"))
ODOCK_AUDIT_SEAL_SECONDS = float(os.environ.get("ODOCK_AUDIT_SEAL_SECONDS", "10"))
# Organisations without their own retention, and records of no organisation (unknown keys).
ODOCK_AUDIT_DEFAULT_RETENTION_DAYS = int(os.environ.get("ODOCK_AUDIT_DEFAULT_RETENTION_DAYS", "0"))
# Guardrail plugins installed in every gateway process, switched on per level by guardrail
# rules (detector "plugin"): JSON {"name": {"class": "dotted.Path", "options": {...}}}.
ODOCK_GUARDRAIL_PLUGINS = json.loads(os.environ.get("ODOCK_GUARDRAIL_PLUGINS") or "{}")
# Circuit breaker per deployment, shared by every gateway process through Redis.
ODOCK_BREAKER_THRESHOLD = int(os.environ.get("ODOCK_BREAKER_THRESHOLD", "5"))
ODOCK_BREAKER_WINDOW_SECONDS = float(os.environ.get("ODOCK_BREAKER_WINDOW_SECONDS", "30"))
ODOCK_BREAKER_COOLDOWN_SECONDS = float(os.environ.get("ODOCK_BREAKER_COOLDOWN_SECONDS", "30"))
# Largest request body the proxy accepts (bytes); larger gets 413.
ODOCK_MAX_BODY_BYTES = int(os.environ.get("ODOCK_MAX_BODY_BYTES", str(8 * 1024 * 1024)))
# Grace period during which a rotated key's old secret keeps working (seconds).
ODOCK_ROTATION_GRACE_SECONDS = int(os.environ.get("ODOCK_ROTATION_GRACE_SECONDS", "86400"))
# Output tokens assumed when reserving budget for a request that sets no max_tokens.
ODOCK_DEFAULT_MAX_OUTPUT_TOKENS = int(os.environ.get("ODOCK_DEFAULT_MAX_OUTPUT_TOKENS", "4096"))
# A reservation not settled within this time (a crashed process) is swept.
ODOCK_RESERVATION_TTL_SECONDS = float(os.environ.get("ODOCK_RESERVATION_TTL_SECONDS", "600"))
# Without the database for this long, fail-closed organisations are refused (503).
ODOCK_DB_OUTAGE_GRACE_SECONDS = float(os.environ.get("ODOCK_DB_OUTAGE_GRACE_SECONDS", "30"))
# Stored responses (POST /v1/responses with store): each call of the gateway to their
# database waits at most this long (then 503 store_unavailable), on this many threads of
# its own; the largest response kept (bytes of JSON), and the longest conversation loaded
# for a continuation (turns, and bytes).
ODOCK_RESPONSE_STORE_TIMEOUT_SECONDS = float(
    os.environ.get("ODOCK_RESPONSE_STORE_TIMEOUT_SECONDS", "5")
)
ODOCK_RESPONSE_STORE_THREADS = int(os.environ.get("ODOCK_RESPONSE_STORE_THREADS", "4"))
ODOCK_RESPONSE_MAX_STORED_BYTES = int(
    os.environ.get("ODOCK_RESPONSE_MAX_STORED_BYTES", str(16 * 1024 * 1024))
)
ODOCK_RESPONSE_MAX_CHAIN = int(os.environ.get("ODOCK_RESPONSE_MAX_CHAIN", "1000"))
ODOCK_RESPONSE_MAX_CONVERSATION_BYTES = int(
    os.environ.get("ODOCK_RESPONSE_MAX_CONVERSATION_BYTES", str(64 * 1024 * 1024))
)
# Request-log writer batching.
ODOCK_RECORD_BATCH_SIZE = int(os.environ.get("ODOCK_RECORD_BATCH_SIZE", "500"))
ODOCK_RECORD_FLUSH_SECONDS = float(os.environ.get("ODOCK_RECORD_FLUSH_SECONDS", "0.05"))
# The shipper's pace (segment log → database). Records are durable on the log already, so
# this is only how soon the database sees them; each shipment is ~3 ms of Python holding
# the GIL, which at 0.05 s landed on the next request at c=1 (bench/RESULTS.md, issue 17).
ODOCK_AUDIT_SHIP_SECONDS = float(os.environ.get("ODOCK_AUDIT_SHIP_SECONDS", "0.5"))
# The segment log rotates at this size; the next segment is zero-filled ahead of time, so a
# process keeps up to two on its spool disk.
ODOCK_AUDIT_SEGMENT_BYTES = int(os.environ.get("ODOCK_AUDIT_SEGMENT_BYTES", str(8 << 20)))

# --- Email (budget alerts) -------------------------------------------------------------
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "587"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
# Without an SMTP host (embedded default) alerts are printed to the console.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "odock@localhost")

# SCIM 2.0 provisioning (apps/scim, served by django-scim2 at /scim/v2/): one bearer token
# per organisation, SCIM Users are per-organisation identities (apps.scim.models).
ODOCK_SCIM_MAX_RESULTS = 200  # the largest page a list or search answers
SCIM_SERVICE_PROVIDER = {
    "USER_MODEL_GETTER": "apps.scim.adapters.identity_model",
    "USER_ADAPTER": "apps.scim.adapters.ScimUserAdapter",
    "GROUP_MODEL": "apps.scim.models.ScimGroup",
    "GROUP_ADAPTER": "apps.scim.adapters.ScimGroupAdapter",
    "USER_FILTER_PARSER": "apps.scim.filters.IdentityFilterQuery",
    "GROUP_FILTER_PARSER": "apps.scim.filters.GroupFilterQuery",
    "SERVICE_PROVIDER_CONFIG_MODEL": "apps.scim.discovery.ServiceProviderConfig",
    "SCHEMAS_GETTER": "apps.scim.discovery.schemas",
    "BASE_LOCATION_GETTER": "apps.scim.adapters.base_location",
    "GET_EXTRA_MODEL_FILTER_KWARGS_GETTER": "apps.scim.adapters.organization_filter",
    "GET_QUERYSET_POST_PROCESSOR_GETTER": "apps.scim.adapters.queryset_prefetch",
    "AUTH_CHECK_MIDDLEWARE": "apps.scim.auth.ScimTokenAuth",
    "NETLOC": "unused",  # required by the library; locations use the request's host instead
    "AUTHENTICATION_SCHEMES": [
        {
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "An organisation's SCIM token: Authorization: Bearer odk-scim-…",
            "primary": True,
        }
    ],
    "WWW_AUTHENTICATE_HEADER": 'Bearer realm="odock-scim"',
}
# --- Single sign-on (apps/sso) ---------------------------------------------------------
# Local passwords stay (the break-glass platform admin); OpenID Connect providers are
# configured per organisation in the admin, not here.
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "apps.sso.backend.OrganisationOidcBackend",
]
# Every call to an identity provider (discovery, JWKS, token, userinfo) waits at most this.
ODOCK_SSO_TIMEOUT_SECONDS = float(os.environ.get("ODOCK_SSO_TIMEOUT_SECONDS", "5"))
