"""Import aiogram without building every Telegram type's validator up front (the worker's RSS).

``import aiogram`` costs about 160 MB of RSS here; 120 MB of it is ``aiogram.types`` calling
``model_rebuild`` on all ~900 Telegram types at import, each building a pydantic-core validator and
serializer that inlines the types it references. The worker only ever parses a handful of them
(Message and what it holds, for sendPhoto / sendMessage / editMessageText answers).

:func:`defer_telegram_types` imports aiogram with that loop skipped (the types are declared with
``defer_build=True`` already) and makes ``TelegramObject.model_rebuild`` use the namespace aiogram
built for it, so pydantic builds a type the first time it is used, exactly as the eager loop would
have; aiogram's methods (``SendPhoto`` …) that reference a type not built yet are completed the
same way on first use. The classes, the Bot and its session are aiogram's own: delivery still goes through the real
aiogram Bot. It must run before anything imports aiogram; if aiogram is already imported it does
nothing. worker.py and bot.py call it first thing (the bot's dispatcher builds ``Update`` and what
it holds on the first update: about 3 MB, against 120 MB for all types).
"""

from __future__ import annotations

import sys


def defer_telegram_types() -> bool:
    """Import aiogram with deferred type validators; False when aiogram was already imported."""
    if "aiogram" in sys.modules:
        return False
    from pydantic import BaseModel

    eager = BaseModel.__dict__["model_rebuild"]  # the classmethod object
    captured: dict = {}

    def skip_aiogram_rebuild_loop(cls, *args, _types_namespace=None, **kwargs):
        if _types_namespace is not None and "Message" in _types_namespace and "TelegramObject" in _types_namespace:
            captured.setdefault("ns", _types_namespace)  # aiogram.types' own "rebuild everything" loop
            return None
        return eager.__func__(cls, *args, _types_namespace=_types_namespace, **kwargs)

    BaseModel.model_rebuild = classmethod(skip_aiogram_rebuild_loop)
    try:
        import aiogram  # noqa: F401  (the whole package, as everyone else imports it)
    finally:
        BaseModel.model_rebuild = eager
    namespace = captured.get("ns")
    if namespace is None:  # a future aiogram without the loop: nothing was skipped
        return True
    from aiogram.methods.base import Response, TelegramMethod
    from aiogram.types.base import TelegramObject

    def rebuild_with_aiogram_namespace(cls, *, force=False, raise_errors=True, _parent_namespace_depth=2,
                                       _types_namespace=None):
        return eager.__func__(cls, force=force, raise_errors=raise_errors,
                              _parent_namespace_depth=_parent_namespace_depth,
                              _types_namespace=_types_namespace if _types_namespace is not None else namespace)

    # Types, and the methods whose fields reference still-unbuilt types, build on first use.
    TelegramObject.model_rebuild = classmethod(rebuild_with_aiogram_namespace)
    TelegramMethod.model_rebuild = classmethod(rebuild_with_aiogram_namespace)
    Response.model_rebuild = classmethod(rebuild_with_aiogram_namespace)  # Response[Message] …
    return True
