"""Settings from the environment (and a ``.env`` file), on pydantic-settings.

Every knob the bot and the worker read is a typed field here, with its default and its bounds; the
environment variable is the field name in upper case. A missing or malformed setting raises
:class:`SettingsError` with one line naming it (never its value when it is a secret); entry points
print that line and exit. Secrets are ``SecretStr``: the object's repr shows ``'**********'``, and
:func:`imagegen.redact.register_settings` scrubs their values from every log line.

``Settings.from_env()`` reads the process environment, then ``.env`` in the working directory
(the environment wins). ``Settings.from_env(mapping)`` reads that mapping alone (tests).
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from imagegen import ratelimits
from imagegen.ratelimits import RateLimit


class SettingsError(Exception):
    """A setting is missing or malformed. The message is one line naming it."""


# (until_seconds, interval_seconds) pairs: poll every `interval` until `until` seconds have passed
# since the task was created. The last `until` is when the workflow gives up. Kie's own advice:
# every 2-3 s for the first 30 s, every 5-10 s up to 2 minutes, every 15-30 s after, stop at 10-15 min.
DEFAULT_POLL_SCHEDULE = "30:3,120:8,900:20"
MAX_WAIT_LIMIT_SECONDS = 24 * 3600  # a schedule that waits longer than a day is a typo

# The delivery lease (docs/reliability.md): the holder renews it with every heartbeat (every 2 s), so
# it only has to outlast a few missed renewals; a dead holder is replaced about one lease after its last
# renewal. A holder that could not renew for half a lease stops sending.
DEFAULT_LEASE_SECONDS = 20
MIN_LEASE_SECONDS = 6
MAX_LEASE_SECONDS = 120


def parse_poll_schedule(text: str) -> list[tuple[float, float]]:
    """Parse ``"30:3,120:8,900:20"`` into ``[(30, 3), (120, 8), (900, 20)]``."""
    steps: list[tuple[float, float]] = []
    try:
        for part in text.split(","):
            until, interval = part.strip().split(":")
            steps.append((float(until), float(interval)))
    except ValueError:
        raise SettingsError(
            f"POLL_SCHEDULE: expected 'until:interval,...' in seconds, e.g. {DEFAULT_POLL_SCHEDULE!r}; got {text!r}"
        ) from None
    return check_poll_schedule(steps)


def check_poll_schedule(steps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Finite, positive intervals, strictly increasing bounds, at most a day in all."""
    if not steps:
        raise SettingsError("POLL_SCHEDULE: empty")
    last = 0.0
    for until, interval in steps:
        if not (math.isfinite(until) and math.isfinite(interval)):
            raise SettingsError(f"POLL_SCHEDULE: every number must be finite; got {steps!r}")
        if interval <= 0 or until <= last:
            raise SettingsError(f"POLL_SCHEDULE: intervals must be > 0 and bounds increasing; got {steps!r}")
        last = until
    if last > MAX_WAIT_LIMIT_SECONDS:
        raise SettingsError(f"POLL_SCHEDULE: the last bound must be at most {MAX_WAIT_LIMIT_SECONDS} s; got {last:g}")
    return [(float(u), float(i)) for u, i in steps]


def _schedule(value: Any) -> list[tuple[float, float]]:
    if isinstance(value, str):
        return parse_poll_schedule(value)
    return check_poll_schedule([(float(u), float(i)) for u, i in value])


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value.rstrip("/")


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
Port = Annotated[int, Field(ge=1, le=65535)]
OptionalPort = Annotated[int, Field(ge=0, le=65535)]  # 0 = off
Seconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=10_000)]
PollSchedule = Annotated[list[tuple[float, float]], NoDecode, BeforeValidator(_schedule)]
# "count/seconds" or "off" (imagegen/ratelimits.py)
RateLimitSetting = Annotated[RateLimit, NoDecode, BeforeValidator(lambda v: RateLimit.parse(v) if isinstance(v, str) else v)]

# from_env(mapping) hands its mapping to settings_customise_sources through this.
_MAPPING: ContextVar[Mapping[str, str] | None] = ContextVar("settings_mapping", default=None)


class _MappingSource(EnvSettingsSource):
    """The environment source, over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], mapping: Mapping[str, str]):
        self._mapping = {k: v.strip() if isinstance(v, str) else v for k, v in mapping.items()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", env_ignore_empty=True, extra="ignore", frozen=True,
        str_strip_whitespace=True, hide_input_in_errors=True,
    )

    # --- required ---
    telegram_bot_token: SecretStr
    kie_api_key: SecretStr
    public_base_url: HttpUrl
    callback_secret: SecretStr
    # Required by bot.py and worker.py (require_database_url); tests and `make demo` start their own.
    database_url: SecretStr | None = None

    # --- endpoints ---
    telegram_api_base: HttpUrl = "https://api.telegram.org"
    kie_api_base: HttpUrl = "https://api.kie.ai"
    # Kie's file upload API lives on its own host (same key): the input pictures of an edit go there.
    kie_upload_base: HttpUrl = "https://kieai.redpandaai.co"
    http_host: str = "0.0.0.0"
    http_port: Port = 8080
    # Internal HTTP port of either process: /healthz, /readyz, /status (counters). 0 = off.
    health_port: OptionalPort = 0

    # --- Temporal ---
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "image-generation"
    # TLS: on when TEMPORAL_TLS is true or any TLS file, the server name or the API key is set.
    temporal_tls: bool = False
    temporal_tls_client_cert: FilePath | None = None  # PEM; mTLS (self-hosted or Temporal Cloud)
    temporal_tls_client_key: FilePath | None = None
    temporal_tls_server_ca: FilePath | None = None  # PEM; default: the system's roots
    temporal_tls_server_name: str | None = None  # SNI and certificate name when it differs from the host
    temporal_api_key: SecretStr | None = None  # Temporal Cloud API key (sent as a bearer token)

    # --- generation and delivery ---
    poll_schedule: PollSchedule = Field(default_factory=lambda: parse_poll_schedule(DEFAULT_POLL_SCHEDULE))
    # Delivery lock lease, renewed by the holder's heartbeats: a lock not renewed for this long is
    # presumed dead and may be taken over.
    delivery_lease_seconds: Annotated[int, Field(ge=MIN_LEASE_SECONDS, le=MAX_LEASE_SECONDS)] = DEFAULT_LEASE_SECONDS
    # "send": a new photo message (sendPhoto); "edit": the status message becomes the photo
    # (editMessageMedia), which a retry after a crash cannot repeat. See docs/reliability.md.
    delivery_mode: Annotated[Literal["send", "edit"], BeforeValidator(_lower)] = "send"
    # The bot's sweep of admitted requests that never became a workflow (imagegen/bot/sweep.py):
    # every this many seconds, for requests older than this.
    unstarted_sweep_seconds: Seconds = 30.0
    # Byte-download fallback (level 2): cap and timeout.
    download_max_bytes: Annotated[int, Field(ge=1024, le=50 * 1024 * 1024)] = 10 * 1024 * 1024
    download_timeout_seconds: Seconds = 30.0
    # One Telegram Bot API request (aiogram session timeout).
    telegram_timeout_seconds: Seconds = 30.0
    # An edit's input pictures uploaded to Kie are reused (Again, Other ratio) for this many hours after
    # their upload, then uploaded again; Kie keeps uploads 3 days. 0: always upload again.
    kie_upload_reuse_hours: Annotated[float, Field(ge=0, le=72, allow_inf_nan=False)] = 60.0
    # Credits (imagegen/credits.py): off = every generation is free (self-hosting); on = each costs
    # its price (imagegen/prices.py), new users get FREE_CREDITS, /buy sells packs for Telegram Stars.
    credits: bool = False
    free_credits: Annotated[int, Field(ge=0, le=100000)] = 3
    # The Kie account watch (imagegen/kie_account.py): how often its balance is checked (schedule
    # imagegen-kie-account; 0 = never), and below which balance the check logs KIE_CREDITS_LOW.
    kie_balance_every_minutes: Annotated[float, Field(ge=0, le=1440, allow_inf_nan=False)] = 10.0
    kie_credits_warn_below: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 100.0

    # --- capacity (docs/reliability.md, "Pools and concurrency") ---
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    db_acquire_timeout_seconds: Seconds = 10.0
    db_command_timeout_seconds: Seconds = 15.0
    worker_max_concurrent_activities: Count = 50
    bot_max_concurrent_updates: Count = 20

    # --- global rate limits (imagegen/ratelimits.py, docs/performance.md): the providers' documented
    # limits as "count/seconds", or "off"; Temporal enforces them for all worker processes together ---
    kie_create_limit: RateLimitSetting = RateLimit(20, 10.0)
    kie_record_info_limit: RateLimitSetting = RateLimit(10, 1.0)
    telegram_send_limit: RateLimitSetting = RateLimit(30, 1.0)

    # --- data retention ---
    # Finished jobs (prompts, result links) and idle conversation state older than this are purged
    # by the hourly Temporal schedule "imagegen-retention". 0 keeps everything.
    retention_days: Annotated[int, Field(ge=0, le=3650)] = 30

    # --- logs and metrics ---
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)] = "INFO"
    # "text" (development) or "json" (one JSON object per line, for log shippers).
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    # The event loop of worker.py and bot.py (imagegen/eventloop.py): uvloop, or asyncio's own.
    event_loop: Annotated[Literal["uvloop", "asyncio"], BeforeValidator(_lower)] = "uvloop"
    # Prometheus /metrics (Temporal SDK metrics + the pipeline's own) on this port; 0 turns it off.
    # Internal: never the public HTTP_PORT.
    metrics_port: OptionalPort = 0

    # --- security (see docs/security.md) ---
    # Kie's webhook HMAC key (optional; set when enabled in the Kie account).
    kie_webhook_hmac_key: SecretStr | None = None
    # Let the byte-download fallback fetch loopback/private addresses (local development only).
    allow_private_urls: bool = False
    # Per-user limits.
    user_max_active: Annotated[int, Field(ge=1, le=1000)] = 2
    user_max_per_minute: Annotated[int, Field(ge=1, le=1000)] = 5

    # --- bot mode ---
    # "polling" (one leader via a Postgres advisory lock) | "webhook"
    bot_mode: Annotated[Literal["polling", "webhook"], BeforeValidator(_lower)] = "polling"
    telegram_webhook_secret: SecretStr | None = None

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret_charset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not all(c.isalnum() or c in "_-" for c in value.get_secret_value()):
            raise ValueError("may only contain A-Z, a-z, 0-9, _ and -")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> "Settings":
        if self.bot_mode == "webhook" and self.telegram_webhook_secret is None:
            raise _Named("TELEGRAM_WEBHOOK_SECRET", "is required when BOT_MODE=webhook")
        if (self.temporal_tls_client_cert is None) != (self.temporal_tls_client_key is None):
            raise _Named("TEMPORAL_TLS_CLIENT_KEY" if self.temporal_tls_client_key is None
                         else "TEMPORAL_TLS_CLIENT_CERT", "is required with the other (client certificate and key)")
        try:
            ratelimits.telegram_queue_rate(self.telegram_send_limit, self.kie_record_info_limit)
        except ValueError as exc:
            raise _Named("TELEGRAM_SEND_LIMIT", str(exc).split(" ", 2)[-1]) from None
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        mapping = _MAPPING.get()
        if mapping is not None:
            return (init_settings, _MappingSource(settings_cls, mapping))
        return (init_settings, env_settings, dotenv_settings)

    # --- the public API ---

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings from the process environment and .env, or from `env` alone."""
        token = _MAPPING.set(env)
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(describe(exc)) from None
        finally:
            _MAPPING.reset(token)

    @property
    def max_wait_seconds(self) -> float:
        return self.poll_schedule[-1][0]

    @property
    def rate_limits(self) -> dict[str, RateLimit]:
        """The limit of each kind of external call (imagegen/ratelimits.py)."""
        return {ratelimits.KIE_CREATE: self.kie_create_limit, ratelimits.KIE_INFO: self.kie_record_info_limit,
                ratelimits.TELEGRAM: self.telegram_send_limit}

    def queue_rate(self, kind: str) -> float | None:
        """The task-queue rate of one kind of call (None: no limit); Telegram's counts Bot API calls."""
        if kind == ratelimits.TELEGRAM:
            return ratelimits.telegram_queue_rate(self.telegram_send_limit, self.kie_record_info_limit)
        return self.rate_limits[kind].rate_for(kind)

    @property
    def direct_kinds(self) -> list[str]:
        """The kinds of call that need no rate-limited queue: without a limit, or paced in Postgres by
        each call wherever it runs (ratelimits.PACED_ANYWHERE: Telegram). A generation runs them on its
        own workflow task queue (GenerationInput.direct_kinds), where the server hands the activity
        over eagerly."""
        return [kind for kind, limit in self.rate_limits.items()
                if limit.unlimited or kind in ratelimits.PACED_ANYWHERE]

    @property
    def temporal_tls_enabled(self) -> bool:
        return self.temporal_tls or any(
            v is not None for v in (self.temporal_tls_client_cert, self.temporal_tls_server_ca,
                                    self.temporal_tls_server_name, self.temporal_api_key))

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise SettingsError(
                "DATABASE_URL is required here (only `make demo` and the tests start an embedded Postgres)"
            )
        return self.database_url.get_secret_value()

    def pool_options(self) -> dict[str, Any]:
        """Keyword arguments of imagegen.jobs.create_pool."""
        return {"max_size": self.db_pool_size, "acquire_timeout": self.db_acquire_timeout_seconds,
                "command_timeout": self.db_command_timeout_seconds}

    def secret_values(self) -> list[str]:
        """Every secret this object carries, the DATABASE_URL password included (for redaction)."""
        values = [getattr(self, name).get_secret_value() for name, info in type(self).model_fields.items()
                  if getattr(self, name) is not None and _is_secret(info.annotation)]
        if self.database_url is not None:
            password = urlsplit(self.database_url.get_secret_value()).password
            if password:
                values.append(unquote(password))
        return values


class _Named(SettingsError):
    """A SettingsError from a model validator: `NAME message`."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name} {message}")


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def describe(exc: ValidationError) -> str:
    """One line naming the first failing setting (and, unless it is a secret, the value given)."""
    err = exc.errors(include_url=False)[0]
    name = str(err["loc"][0]).upper() if err["loc"] else "settings"
    if err["type"] == "missing":
        return f"{name} is required but not set (see .env.example)"
    message = err["msg"].removeprefix("Value error, ")
    info = Settings.model_fields.get(name.lower())
    given = err.get("input")
    if info is not None and not _is_secret(info.annotation) and isinstance(given, (str, int, float)):
        return f"{name}: {message}; got {str(given)[:80]!r}".replace("\n", " ")
    return f"{name}: {message}".replace("\n", " ")
