"""The catalogues: both languages have the same keys and placeholders, the committed .mo files are
the compiled .po files, every key the code asks for exists, and the language choice rule."""

import gettext
import io
import re
import string
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from imagegen.i18n import LANGS, LOCALES_DIR, lang_for, t

ROOT = Path(__file__).resolve().parent.parent


def catalogue(lang: str) -> dict[str, str]:
    with (LOCALES_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as fp:
        return {m.id: m.string for m in read_po(fp) if m.id}


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_both_languages_have_the_same_keys_and_placeholders():
    ru, en = catalogue("ru"), catalogue("en")
    assert set(ru) == set(en)
    for key in ru:
        assert ru[key] and en[key], key
        assert placeholders(ru[key]) == placeholders(en[key]), key


@pytest.mark.parametrize("lang", LANGS)
def test_committed_mo_is_the_compiled_po(lang):
    po_dir = LOCALES_DIR / lang / "LC_MESSAGES"
    with (po_dir / "messages.po").open("rb") as fp:
        compiled = io.BytesIO()
        write_mo(compiled, read_po(fp))
    expected = gettext.GNUTranslations(io.BytesIO(compiled.getvalue()))._catalog  # type: ignore[attr-defined]
    with (po_dir / "messages.mo").open("rb") as fp:
        committed = gettext.GNUTranslations(fp)._catalog  # type: ignore[attr-defined]
    committed.pop("", None), expected.pop("", None)  # the header (compiler name, dates)
    assert committed == expected, "run `make locales` and commit the .mo files"


def test_every_key_the_code_uses_exists():
    keys = set(catalogue("ru"))
    used: set[str] = set()
    for path in [*ROOT.glob("imagegen/**/*.py"), *ROOT.glob("activities/*.py")]:
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_.]+)["']""", path.read_text()))
    assert used, "no t('…') call found"
    assert used <= keys, used - keys


def test_every_text_fits_telegram():
    for lang in LANGS:
        for key, text in catalogue(lang).items():
            assert len(text) < 1024, key  # captions are ≤ 1024; messages leave room for the placeholders


@pytest.mark.parametrize("code,lang", [
    (None, "ru"), ("", "ru"), ("ru", "ru"), ("uk", "ru"), ("be", "ru"), ("kk", "ru"), ("ru-RU", "ru"),
    ("en", "en"), ("en-US", "en"), ("de", "en"), ("pt-br", "en"),
])
def test_language_from_telegram_language_code(code, lang):
    assert lang_for(code) == lang


def test_translation_in_each_language():
    assert t("status.done", "ru") == "✅ Генерация завершена"
    assert t("status.done", "en") == "✅ Generation complete"
    assert t("caption", "en", model="Z-Image", ratio="1:1") == "🖼 Z-Image · 1:1"
    assert t("status.done", "xx") == t("status.done", "ru")  # unknown → Russian


def test_every_model_option_has_its_question_and_value_titles():
    from imagegen.models import MODELS

    keys = set(catalogue("ru"))
    for model in MODELS.values():
        for option in model.options:
            assert f"option.{option.name}" in keys
            assert {f"option.{option.name}.{v}" for v in option.values} <= keys
