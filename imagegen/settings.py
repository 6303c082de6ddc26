"""Settings from the environment.

Every knob the bot and the worker read lives here, with its default. A missing or malformed required
setting raises :class:`SettingsError` with one line naming it; entry points print that line and exit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping


class SettingsError(Exception):
    """A setting is missing or malformed. The message is one line naming it."""


# (until_seconds, interval_seconds) pairs: poll every `interval` until `until` seconds have passed
# since the task was created. The last `until` is when the workflow gives up. Kie's own advice:
# every 2-3 s for the first 30 s, every 5-10 s up to 2 minutes, every 15-30 s after, stop at 10-15 min.
DEFAULT_POLL_SCHEDULE = "30:3,120:8,900:20"

# The delivery lease bounds (docs/reliability.md): an attempt sends for at most 0.75 × lease, which
# must stay inside the deliver activity's start-to-close timeout (100 s, workflows/generation.py).
MIN_LEASE_SECONDS = 4
MAX_LEASE_SECONDS = 130


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
    if not steps:
        raise SettingsError("POLL_SCHEDULE: empty")
    last = 0.0
    for until, interval in steps:
        if interval <= 0 or until <= last:
            raise SettingsError(
                f"POLL_SCHEDULE: intervals must be > 0 and bounds increasing; got {text!r}"
            )
        last = until
    return steps


@dataclass(frozen=True)
class Settings:
    telegram_bot_token: str
    kie_api_key: str
    public_base_url: str
    callback_secret: str
    telegram_api_base: str = "https://api.telegram.org"
    kie_api_base: str = "https://api.kie.ai"
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    database_url: str | None = None
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "image-generation"
    poll_schedule: list[tuple[float, float]] = field(
        default_factory=lambda: parse_poll_schedule(DEFAULT_POLL_SCHEDULE)
    )
    # Delivery lock lease: a holder that has not finished within this many seconds is presumed dead.
    delivery_lease_seconds: int = 120
    # Byte-download fallback (level 2): cap and timeout.
    download_max_bytes: int = 10 * 1024 * 1024
    download_timeout_seconds: float = 30.0
    # One Telegram Bot API request (aiogram session timeout).
    telegram_timeout_seconds: float = 30.0
    log_level: str = "INFO"
    # "text" (development) or "json" (one JSON object per line, for log shippers).
    log_format: str = "text"
    # Prometheus /metrics (Temporal SDK metrics + the pipeline's own) on this port; 0 turns it off.
    # Internal: never the public HTTP_PORT.
    metrics_port: int = 0
    # --- security (see docs/security.md) ---
    # Kie's webhook HMAC key (optional; set when enabled in the Kie account).
    kie_webhook_hmac_key: str | None = None
    # Let the byte-download fallback fetch loopback/private addresses (local development only).
    allow_private_urls: bool = False
    # Per-user limits.
    user_max_active: int = 2
    user_max_per_minute: int = 5
    # --- bot mode ---
    bot_mode: str = "polling"  # "polling" (one leader via a Postgres advisory lock) | "webhook"
    telegram_webhook_secret: str | None = None

    @property
    def max_wait_seconds(self) -> float:
        return self.poll_schedule[-1][0]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise SettingsError(f"{name} is required but not set (see .env.example)")
            return value

        def optional(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        def integer(name: str, default: int) -> int:
            raw = optional(name, str(default))
            try:
                return int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be an integer, got {raw!r}") from None

        def number(name: str, default: float) -> float:
            raw = optional(name, str(default))
            try:
                return float(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number, got {raw!r}") from None

        def url(name: str, default: str | None = None) -> str:
            value = required(name) if default is None else optional(name, default)
            if not value.startswith(("http://", "https://")):
                raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
            return value.rstrip("/")

        def flag(name: str, default: bool) -> bool:
            raw = optional(name, "1" if default else "0").lower()
            if raw in ("1", "true", "yes", "on"):
                return True
            if raw in ("0", "false", "no", "off"):
                return False
            raise SettingsError(f"{name} must be true or false, got {raw!r}")

        bot_mode = optional("BOT_MODE", "polling").lower()
        if bot_mode not in ("polling", "webhook"):
            raise SettingsError(f"BOT_MODE must be 'polling' or 'webhook', got {bot_mode!r}")
        webhook_secret = env.get("TELEGRAM_WEBHOOK_SECRET", "").strip() or None
        if bot_mode == "webhook" and not webhook_secret:
            raise SettingsError("TELEGRAM_WEBHOOK_SECRET is required when BOT_MODE=webhook")
        if webhook_secret is not None and not all(c.isalnum() or c in "_-" for c in webhook_secret):
            raise SettingsError("TELEGRAM_WEBHOOK_SECRET may only contain A-Z, a-z, 0-9, _ and -")

        log_format = optional("LOG_FORMAT", "text").lower()
        if log_format not in ("text", "json"):
            raise SettingsError(f"LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
        metrics_port = integer("METRICS_PORT", 0)
        if not 0 <= metrics_port <= 65535:
            raise SettingsError(f"METRICS_PORT must be between 0 (off) and 65535, got {metrics_port}")

        lease = integer("DELIVERY_LEASE_SECONDS", 120)
        if not MIN_LEASE_SECONDS <= lease <= MAX_LEASE_SECONDS:
            raise SettingsError(
                f"DELIVERY_LEASE_SECONDS must be between {MIN_LEASE_SECONDS} and {MAX_LEASE_SECONDS}, got {lease} "
                "(an attempt may send for 75% of it, inside the delivery activity's 100 s timeout)"
            )

        return cls(
            telegram_bot_token=required("TELEGRAM_BOT_TOKEN"),
            kie_api_key=required("KIE_API_KEY"),
            public_base_url=url("PUBLIC_BASE_URL"),
            callback_secret=required("CALLBACK_SECRET"),
            telegram_api_base=url("TELEGRAM_API_BASE", "https://api.telegram.org"),
            kie_api_base=url("KIE_API_BASE", "https://api.kie.ai"),
            http_host=optional("HTTP_HOST", "0.0.0.0"),
            http_port=integer("HTTP_PORT", 8080),
            database_url=env.get("DATABASE_URL", "").strip() or None,
            temporal_address=optional("TEMPORAL_ADDRESS", "localhost:7233"),
            temporal_namespace=optional("TEMPORAL_NAMESPACE", "default"),
            temporal_task_queue=optional("TEMPORAL_TASK_QUEUE", "image-generation"),
            poll_schedule=parse_poll_schedule(optional("POLL_SCHEDULE", DEFAULT_POLL_SCHEDULE)),
            delivery_lease_seconds=lease,
            download_max_bytes=integer("DOWNLOAD_MAX_BYTES", 10 * 1024 * 1024),
            download_timeout_seconds=number("DOWNLOAD_TIMEOUT_SECONDS", 30.0),
            telegram_timeout_seconds=number("TELEGRAM_TIMEOUT_SECONDS", 30.0),
            log_level=optional("LOG_LEVEL", "INFO").upper(),
            log_format=log_format,
            metrics_port=metrics_port,
            kie_webhook_hmac_key=env.get("KIE_WEBHOOK_HMAC_KEY", "").strip() or None,
            allow_private_urls=flag("ALLOW_PRIVATE_URLS", False),
            user_max_active=integer("USER_MAX_ACTIVE", 2),
            user_max_per_minute=integer("USER_MAX_PER_MINUTE", 5),
            bot_mode=bot_mode,
            telegram_webhook_secret=webhook_secret,
        )

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError(
                "DATABASE_URL is required here (only `make demo` and the tests start an embedded Postgres)"
            )
        return self.database_url
