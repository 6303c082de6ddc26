"""What a generation costs in credits, and the packs of credits sold for Telegram Stars: data, next
to imagegen/models.py. A model with options may price each value (Seedream's 4K costs more)."""

from __future__ import annotations

from dataclasses import dataclass

# model key → credits; or → {option name: {value: credits}} added to the base ("_base").
PRICES: dict[str, int | dict] = {
    "zimage": 1,
    "seedream45": {"_base": 2, "quality": {"basic": 0, "high": 1}},
    "nanobanana": 2,
    "nanobanana_edit": 2,
    "seedream45_edit": {"_base": 2, "quality": {"basic": 0, "high": 1}},
}
DEFAULT_PRICE = 2  # a model without an entry (a test fails for every such model: tests/test_credits.py)


def price(model: str, options: dict[str, str] | None = None) -> int:
    entry = PRICES.get(model, DEFAULT_PRICE)
    if isinstance(entry, int):
        return entry
    total = int(entry.get("_base", 0))
    for name, values in entry.items():
        if name != "_base" and isinstance(values, dict):
            total += int(values.get((options or {}).get(name, ""), 0))
    return total


@dataclass(frozen=True)
class Pack:
    key: str
    credits: int
    stars: int  # price in Telegram Stars (currency XTR)


PACKS: dict[str, Pack] = {p.key: p for p in (Pack("s", 10, 50), Pack("m", 50, 200), Pack("l", 150, 500))}
