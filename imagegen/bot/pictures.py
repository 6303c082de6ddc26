"""An edit's pictures in the chat: what a message carries, how it is checked before anything is
fetched, and how the pictures are kept in the conversation state (aiogram FSM data, JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from aiogram.types import Message

from imagegen.contracts import InputImage
from imagegen.models import INPUT_TYPES, MAX_INPUT_BYTES
from imagegen.uploads import mb

# Image documents are recognised by their MIME type, or by their name when the client sends none.
_EXTENSIONS = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_FIELDS = {f.name for f in fields(InputImage)}


@dataclass(frozen=True)
class Refusal:
    """Why a message's picture is not taken: a catalogue key and its values."""

    key: str
    values: dict[str, Any]


def document_type(message: Message) -> str | None:
    """The MIME type of a document that claims to be an image (image/*), else None."""
    doc = message.document
    if doc is None:
        return None
    mime = (doc.mime_type or "").lower()
    if not mime and doc.file_name and "." in doc.file_name:
        mime = _EXTENSIONS.get(doc.file_name.rsplit(".", 1)[-1].lower(), "")
    return mime if mime.startswith("image/") else None


def is_picture(message: Message) -> bool:
    """A photo, or a document that claims to be an image (its format is checked by picture_of)."""
    return bool(message.photo) or (document_type(message) is not None and message.animation is None)


def picture_of(message: Message) -> InputImage | Refusal:
    """The picture a photo or image document carries, checked with what Telegram announces (size,
    type); the bytes themselves are checked again after the download (activities/inputs.py)."""
    if message.photo:
        size = message.photo[-1]  # Telegram lists the sizes smallest first
        image = InputImage(file_id=size.file_id, file_unique_id=size.file_unique_id, size=size.file_size or 0)
    else:
        doc = message.document
        mime = document_type(message) or ""
        if mime not in INPUT_TYPES:
            return Refusal("edit.bad_format", {"mime": mime.removeprefix("image/").upper() or "?"})
        image = InputImage(file_id=doc.file_id, file_unique_id=doc.file_unique_id, size=doc.file_size or 0, mime=mime)
    if image.size > MAX_INPUT_BYTES:
        return Refusal("edit.too_big", {"size": mb(image.size), "limit": MAX_INPUT_BYTES // (1024 * 1024)})
    return image


def images_to_data(images: list[InputImage]) -> list[dict[str, Any]]:
    return [asdict(i) for i in images]


def images_from_data(data: dict[str, Any]) -> list[InputImage]:
    """The pictures kept in the conversation state ([] outside an edit)."""
    return [InputImage(**{k: v for k, v in item.items() if k in _FIELDS})
            for item in data.get("images") or [] if isinstance(item, dict)]
