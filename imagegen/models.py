"""The image models the bot offers, as data.

Each entry holds Kie's model id, the button title in both languages, the prompt limit, the aspect
ratios (and the input field Kie reads them from), extra options asked as their own step (with their
allowed values and default; their question and value titles are catalogue texts) and fixed input
values. The bot's menus, the prompt and option checks and
the Kie request body all come from here: adding a model is adding an entry, no handler changes.

An edit model (``images`` set) takes input pictures: the Kie field that carries their URLs, how many
it takes, how large each may be and of which types. The bot offers only edit models for a photo the
user sends (Z-Image takes no picture), and only text-to-image models after /start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LANGS = ("ru", "en")


@dataclass(frozen=True)
class Option:
    """An input field the user chooses as an extra step (e.g. Seedream's quality). Its question and
    value titles are in the catalogues: ``option.<name>`` and ``option.<name>.<value>``."""

    name: str  # Kie's input field, also the key in the job's options
    values: tuple[str, ...]
    default: str


@dataclass(frozen=True)
class ImageInputs:
    """How an edit model takes its input pictures (Kie's model page: field, count, size, types)."""

    field: str  # Kie's input field carrying the pictures' URLs, e.g. "image_urls"
    max_count: int
    max_bytes: int = 10 * 1024 * 1024
    types: tuple[str, ...] = ("image/jpeg", "image/png", "image/webp")


@dataclass(frozen=True)
class ImageModel:
    key: str  # short key used in callback data and stored with the job
    kie_model: str  # Kie.ai model id sent in createTask
    titles: dict[str, str]  # button title per language
    max_prompt_chars: int
    aspect_ratios: tuple[str, ...]
    ratio_field: str = "aspect_ratio"  # the input field Kie reads the ratio from
    options: tuple[Option, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)  # input values always sent
    images: ImageInputs | None = None  # set for an edit model (it takes input pictures)

    @property
    def edits(self) -> bool:
        return self.images is not None

    def title(self, lang: str) -> str:
        return self.titles.get(lang) or self.titles["en"]

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def clean_options(self, chosen: dict[str, str] | None) -> dict[str, str]:
        """Every option of this model with a valid value: the chosen one, else its default."""
        chosen = chosen or {}
        return {o.name: chosen[o.name] if chosen.get(o.name) in o.values else o.default for o in self.options}

    def next_option(self, chosen: dict[str, str]) -> Option | None:
        """The first option not chosen yet (the next extra step), None when all are."""
        return next((o for o in self.options if o.name not in chosen), None)

    def kie_input(self, prompt: str, aspect_ratio: str, options: dict[str, str] | None = None,
                  image_urls: list[str] | None = None) -> dict[str, Any]:
        """The createTask ``input`` object for this model (an edit model also gets its pictures' URLs)."""
        if aspect_ratio not in self.aspect_ratios:
            raise ValueError(f"{self.key}: aspect ratio {aspect_ratio!r} not allowed")
        body: dict[str, Any] = {"prompt": prompt, self.ratio_field: aspect_ratio}
        body.update(self.clean_options(options))
        body.update(self.fixed)
        if self.images is not None:
            if not image_urls or len(image_urls) > self.images.max_count:
                raise ValueError(f"{self.key}: takes 1 to {self.images.max_count} pictures, got {len(image_urls or [])}")
            body[self.images.field] = list(image_urls)
        elif image_urls:
            raise ValueError(f"{self.key}: takes no input picture")
        return body

    def kie_request(self, prompt: str, aspect_ratio: str, options: dict[str, str] | None = None,
                    callback_url: str | None = None, image_urls: list[str] | None = None) -> dict[str, Any]:
        """The whole createTask body."""
        body: dict[str, Any] = {"model": self.kie_model,
                                "input": self.kie_input(prompt, aspect_ratio, options, image_urls)}
        if callback_url:
            body["callBackUrl"] = callback_url
        return body


QUALITY = Option(name="quality", values=("basic", "high"), default="basic")

MODELS: dict[str, ImageModel] = {
    m.key: m
    for m in (
        ImageModel(
            key="zimage",
            kie_model="z-image",
            titles={"ru": "Z-Image", "en": "Z-Image"},
            max_prompt_chars=1000,
            aspect_ratios=("1:1", "4:3", "3:4", "16:9", "9:16"),
        ),
        ImageModel(
            key="seedream45",
            kie_model="seedream/4.5-text-to-image",
            titles={"ru": "Seedream 4.5", "en": "Seedream 4.5"},
            max_prompt_chars=3000,
            aspect_ratios=("1:1", "4:3", "3:4", "16:9", "9:16", "2:3", "3:2", "21:9"),
            options=(QUALITY,),
        ),
        ImageModel(
            key="nanobanana",
            kie_model="google/nano-banana",
            titles={"ru": "Nano Banana", "en": "Nano Banana"},
            # Kie allows 5000; one Telegram message carries at most 4096.
            max_prompt_chars=4096,
            aspect_ratios=("1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto"),
            ratio_field="image_size",  # Kie's google/nano-banana page names the ratio field image_size
            fixed={"output_format": "png"},
        ),
        # Edit models: the user's pictures (or a delivered result) plus a description of the change.
        ImageModel(
            key="nanobanana_edit",
            kie_model="google/nano-banana-edit",
            titles={"ru": "Nano Banana Edit", "en": "Nano Banana Edit"},
            max_prompt_chars=4096,  # Kie allows 5000; one Telegram message carries at most 4096
            # "auto" first: an edit usually keeps the picture's own proportions.
            aspect_ratios=("auto", "1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9"),
            ratio_field="image_size",
            fixed={"output_format": "png"},
            images=ImageInputs(field="image_urls", max_count=10),
        ),
        ImageModel(
            key="seedream45_edit",
            kie_model="seedream/4.5-edit",
            titles={"ru": "Seedream 4.5 Edit", "en": "Seedream 4.5 Edit"},
            max_prompt_chars=3000,
            aspect_ratios=("1:1", "4:3", "3:4", "16:9", "9:16", "2:3", "3:2", "21:9"),
            options=(QUALITY,),
            images=ImageInputs(field="image_urls", max_count=14),
        ),
    )
}

# The models /start offers (text to image) and the ones a photo gets (edits).
TEXT_MODELS: tuple[ImageModel, ...] = tuple(m for m in MODELS.values() if not m.edits)
EDIT_MODELS: tuple[ImageModel, ...] = tuple(m for m in MODELS.values() if m.edits)
# The most pictures any edit model takes, and the largest picture any of them takes.
MAX_INPUT_IMAGES = max(m.images.max_count for m in EDIT_MODELS)
MAX_INPUT_BYTES = max(m.images.max_bytes for m in EDIT_MODELS)
INPUT_TYPES = tuple(sorted({t for m in EDIT_MODELS for t in m.images.types}))
MAX_EDIT_PROMPT_CHARS = max(m.max_prompt_chars for m in EDIT_MODELS)


def get_model(key: str | None) -> ImageModel | None:
    return MODELS.get(key or "")


def edit_models_for(count: int) -> list[ImageModel]:
    """The edit models that take `count` pictures."""
    return [m for m in EDIT_MODELS if count <= m.images.max_count]
