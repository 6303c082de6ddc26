"""Shared domain code of the image-generation pipeline.

settings (environment), kie (Kie.ai client and state parser), jobs (Postgres job repository with the
delivery lock), delivery (Telegram delivery with a 3-level fallback), i18n (catalogues in locales/), models, logs.
Workflows and activities build on this; bot.py and worker.py are entry points.
"""
