"""Image models offered in the bot's menu, as data. Adding a model is adding an entry here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageModel:
    key: str  # short key used in callback data (≤ 64 bytes in all)
    kie_model: str  # Kie.ai model name sent in createTask
    title: str
    aspect_ratios: tuple[str, ...]
    max_prompt_chars: int


MODELS: dict[str, ImageModel] = {
    "zimage": ImageModel(
        key="zimage",
        kie_model="z-image",
        title="Z-Image",
        aspect_ratios=("1:1", "4:3", "3:4", "16:9", "9:16"),
        max_prompt_chars=1000,
    ),
}


def get_model(key: str) -> ImageModel | None:
    return MODELS.get(key)
