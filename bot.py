"""Bot entry point: the Telegram conversation (long polling) and the Kie callback endpoint."""

from __future__ import annotations

import sys

from imagegen import eventloop
from imagegen.logs import setup_logging
from imagegen.redact import install as install_redaction
from imagegen.redact import register_settings
from imagegen.settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings.from_env()
        settings.require_database_url()
    except SettingsError as exc:
        print(f"bot: configuration error: {exc}", file=sys.stderr)
        return 2
    register_settings(settings)
    setup_logging(settings.log_level, fmt=settings.log_format)
    install_redaction()  # aiogram/aiohttp/temporalio lines are scrubbed of secrets too
    from imagegen.lean_aiogram import defer_telegram_types

    defer_telegram_types()  # before aiogram is imported: Telegram types built on use (imagegen/lean_aiogram.py)
    from imagegen.bot.app import run_bot

    eventloop.run(run_bot(settings), settings.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
