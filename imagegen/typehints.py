"""Type hints of payload dataclasses, worked out once per class (issue 18, throughput).

temporalio 1.35's JSON converter calls ``typing.get_type_hints(cls)`` for every payload it decodes
into a dataclass (``value_to_type``). With ``from __future__ import annotations`` (imagegen/contracts.py)
each call evaluates every field's annotation string anew: 0.1–0.2 ms for a GenerationInput or a
DeliverInput, several per generation, 4 % of worker.py's event loop in a burst (py-spy). A class's
hints do not change once it is defined, so :func:`cache_type_hints` gives the converter module a
``get_type_hints`` that remembers them per class (a bounded cache; a copy of the dict is returned,
as the original returns a new one). Called by ``worker.make_worker``; relies on the converter's
module-level name (the dependency is pinned: requirements.lock); tests/test_sandbox.py checks it.
"""

from __future__ import annotations

import functools
import typing

from temporalio.converter import _payload_converter

_CACHE_SIZE = 512


def cache_type_hints() -> None:
    """Install the per-class cache in temporalio's payload converter (once per process)."""
    original = _payload_converter.get_type_hints
    if getattr(original, "cached_per_class", False):
        return

    @functools.lru_cache(maxsize=_CACHE_SIZE)
    def per_class(obj: typing.Any) -> dict[str, typing.Any]:
        return original(obj)

    def get_type_hints(obj: typing.Any, *args: typing.Any, **kwargs: typing.Any) -> dict[str, typing.Any]:
        if args or kwargs:
            return original(obj, *args, **kwargs)
        try:
            return dict(per_class(obj))
        except TypeError:  # unhashable: as before
            return original(obj)

    get_type_hints.cached_per_class = True  # type: ignore[attr-defined]
    get_type_hints.cache_info = per_class.cache_info  # type: ignore[attr-defined]
    _payload_converter.get_type_hints = get_type_hints
