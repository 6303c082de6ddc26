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


def keep_response_types() -> bool:
    """Keep every ``Response[...]`` aiogram parametrizes (one per return type of a Bot API method).

    aiogram validates each answer with ``Response[method.__returning__]``, and pydantic caches a
    parametrized generic model only weakly: after the next full garbage collection nothing holds
    ``Response[Message]``, so the next answer builds it (and its validator) again — 10–90 ms of CPU.
    In worker.py's burst that was 13 % of the event loop (py-spy, `python -m tests.bench.profile`).
    A strong dict keeps the few dozen that exist; anything else goes to pydantic as before.
    False when already done."""
    from aiogram.methods.base import Response

    if getattr(Response, "_kept_parametrizations", None) is not None:
        return False
    parametrize = Response.__class_getitem__.__func__  # pydantic's BaseModel.__class_getitem__
    kept: dict = {}

    def class_getitem(cls, params):
        if cls is not Response:  # Response[X] itself is parametrized further only by pydantic
            return parametrize(cls, params)
        try:
            return kept[params]
        except KeyError:
            made = kept[params] = parametrize(cls, params)
            return made
        except TypeError:  # unhashable parameters: not kept
            return parametrize(cls, params)

    Response.__class_getitem__ = classmethod(class_getitem)
    Response._kept_parametrizations = kept
    return True


def defer_telegram_types() -> bool:
    """Import aiogram with deferred type validators; False when aiogram was already imported.
    Either way, the Bot API answers' ``Response[...]`` models are kept (keep_response_types)."""
    if "aiogram" in sys.modules:
        keep_response_types()
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
    keep_response_types()
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
