"""Editing pictures through the bot (issue 16), a scripted user against the real dispatcher, worker,
Temporal and Postgres: a photo with a caption, an album, a photo and then a text, the ✏️ button under
a result, the edit models only (never Z-Image), every bad input answered with nothing lost, and
/history, Again, Other ratio and Original for an edit."""

import hashlib

import pytest

from imagegen.bot.reminders import remind_once
from imagegen.i18n import t
from imagegen.jobs import job_input_files, job_uploads
from tests.support.chat import begin, button, press, said, send_photo_to_edit, wait_text
from tests.support.images import make_jpeg_like, make_png, png_text

pytestmark = pytest.mark.e2e


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def buttons_of(stack, chat, label):
    message_id, _ = button(stack, chat, label)
    return [b for b, _ in stack.tg.inline_buttons(chat, message_id)]


def tasks(stack):
    return sorted(stack.kie.tasks.values(), key=lambda x: x.created)


async def edited_picture(stack, chat, n=1, timeout=30, lang="ru"):
    await stack.tg.wait_for(lambda: len(stack.photos_for(chat)) == n, timeout=timeout)
    await stack.tg.wait_for(lambda: said(stack, chat).count(t("status.done", lang)) == n, timeout=10)
    return stack.photos_for(chat)[-1]


async def test_a_photo_with_a_russian_caption_gives_one_picture_made_from_it(stack):
    chat = 760_001
    stack.tg.set_user_language(chat, "ru")
    await stack.start_bot()
    picture = make_png(48, 32, seed=91)
    stack.tg.user_send_photo(chat, caption="сделай закат над морем", image=picture)
    menu = await wait_text(stack, chat, "Выберите модель для правки")
    assert menu.startswith(t("edit.choose_model", "ru", count=1, prompt="сделай закат над морем"))
    assert buttons_of(stack, chat, "Nano Banana Edit") == ["Nano Banana Edit", "Seedream 4.5 Edit"]  # no Z-Image
    await press(stack, chat, "Nano Banana Edit")
    await stack.tg.wait_for(lambda: button(stack, chat, "auto"))
    assert buttons_of(stack, chat, "auto")[0] == "auto"
    await press(stack, chat, "auto")
    photo = await edited_picture(stack, chat)
    (task,) = tasks(stack)
    assert task.body["model"] == "google/nano-banana-edit"
    assert task.body["input"]["prompt"] == "сделай закат над морем"
    assert task.input_sha256 == [sha(picture)]  # the full size, not the thumbnail
    assert photo.sha256 == sha(stack.kie.image_bytes(task.task_id)) and photo.caption == "🖼 Nano Banana Edit · auto"
    assert png_text(stack.kie.image_bytes(task.task_id)) == f"inputs={sha(picture)}"
    assert len(stack.photos_for(chat)) == 1
    job = await stack.pool.fetchrow("SELECT id FROM generation_jobs WHERE user_id = $1", chat)
    row = await stack.repo.get(job["id"])
    assert [f["file_unique_id"] for f in job_input_files(row)] == [stack.tg.updates[-3]["message"]["photo"][-1]
                                                                    ["file_unique_id"]]
    assert job_uploads(row)[0]["url"] == task.input_urls[0]


async def test_an_album_of_three_is_one_answer_and_one_request_with_three_inputs(stack):
    chat = 760_002
    await stack.start_bot()
    pictures = [make_png(24, 24, seed=s) for s in (92, 93, 94)]
    stack.tg.user_send_album(chat, pictures, caption="собери в одну сцену", caption_index=1)
    await wait_text(stack, chat, t("edit.choose_model", "ru", count=3, prompt="собери в одну сцену"))
    assert len(stack.tg.messages(chat)) == 1  # one message for the album, edited as its parts came
    await press(stack, chat, "Seedream 4.5 Edit")
    await press(stack, chat, "Высокое")
    await press(stack, chat, "16:9")
    await edited_picture(stack, chat)
    (task,) = tasks(stack)
    assert task.body["model"] == "seedream/4.5-edit" and task.body["input"]["quality"] == "high"
    assert task.body["input"]["aspect_ratio"] == "16:9"
    assert task.input_sha256 == [sha(p) for p in pictures]  # the album's order


async def test_a_photo_then_a_text_and_the_back_button(stack):
    chat = 760_003
    stack.tg.set_user_language(chat, "en")
    await stack.start_bot()
    picture = make_png(30, 30, seed=95)
    stack.tg.user_send_photo(chat, image=picture)
    await wait_text(stack, chat, t("edit.got", "en", count=1), exact=True)
    stack.tg.user_send_text(chat, "add a red hat")
    await wait_text(stack, chat, t("edit.choose_model", "en", count=1, prompt="add a red hat"))
    await press(stack, chat, "Nano Banana Edit")
    await stack.tg.wait_for(lambda: button(stack, chat, "auto"))
    await press(stack, chat, "Back")  # the ratio step → the edit models again
    await stack.tg.wait_for(lambda: button(stack, chat, "Seedream 4.5 Edit"))
    await press(stack, chat, "Seedream 4.5 Edit")
    await press(stack, chat, "Basic")
    await press(stack, chat, "1:1")
    await edited_picture(stack, chat, lang="en")
    (task,) = tasks(stack)
    assert task.body["model"] == "seedream/4.5-edit" and task.input_sha256 == [sha(picture)]


async def test_bad_inputs_get_a_clear_answer_and_lose_nothing(stack):
    chat = 760_004
    await stack.start_bot()
    picture = make_png(20, 20, seed=96)
    stack.tg.user_send_photo(chat, image=picture)  # the picture in hand
    await wait_text(stack, chat, t("edit.got", "ru", count=1), exact=True)
    kept = t("edit.kept", "ru", count=1)

    stack.tg.user_send_document(chat, b"%PDF-1.4", "report.pdf", "application/pdf")
    await wait_text(stack, chat, t("edit.not_image", "ru"), exact=True)
    stack.tg.user_send_document(chat, make_jpeg_like(2000), "huge.jpg", "image/jpeg", file_size=12 * 1024 * 1024)
    await wait_text(stack, chat, t("edit.too_big", "ru", size="12.0", limit=10) + "\n" + kept, exact=True)
    stack.tg.user_send_photo(chat, image=make_png(8, 8), file_size=11 * 1024 * 1024)
    await wait_text(stack, chat, t("edit.too_big", "ru", size="11.0", limit=10) + "\n" + kept, exact=True)
    stack.tg.user_send_document(chat, b"GIF89a....", "cat.gif", "image/gif")
    await wait_text(stack, chat, t("edit.bad_format", "ru", mime="GIF") + "\n" + kept, exact=True)
    stack.tg.user_send_sticker(chat)  # animated
    await wait_text(stack, chat, t("edit.sticker", "ru"), exact=True)
    stack.tg.user_send_animation(chat)
    await wait_text(stack, chat, t("edit.animated", "ru"), exact=True)

    # a photo without any text after a while: one reminder, the picture still there
    assert await remind_once(stack.pool, stack.bot, older_than=0) >= 1
    await wait_text(stack, chat, t("edit.reminder", "ru", count=1), exact=True)
    assert await remind_once(stack.pool, stack.bot, older_than=0) == 0  # once
    assert said(stack, chat).count(t("edit.reminder", "ru", count=1)) == 1
    stack.tg.user_send_text(chat, "добавь снег")
    await wait_text(stack, chat, t("edit.choose_model", "ru", count=1, prompt="добавь снег"))
    await press(stack, chat, "Nano Banana Edit")
    await press(stack, chat, "auto")
    await edited_picture(stack, chat)
    (task,) = tasks(stack)
    assert task.input_sha256 == [sha(picture)]  # only the good picture, none of the refused ones
    assert stack.kie.upload_calls and len(stack.kie.upload_calls) == 1


async def test_too_many_pictures_for_a_model_and_for_every_model(stack):
    chat = 760_005
    await stack.start_bot()
    stack.tg.user_send_album(chat, 10)
    stack.tg.user_send_album(chat, 5)
    note = t("edit.too_many", "ru", limit=14, extra=1)
    await wait_text(stack, chat, note)
    stack.tg.user_send_text(chat, "все в один коллаж")
    await wait_text(stack, chat, t("edit.choose_model", "ru", count=14, prompt="все в один коллаж"))
    # 14 pictures: Nano Banana Edit takes at most 10, so only Seedream 4.5 Edit is offered
    assert buttons_of(stack, chat, "Seedream 4.5 Edit") == ["Seedream 4.5 Edit"]
    await press(stack, chat, "Seedream 4.5 Edit")
    await press(stack, chat, "Обычное")
    await press(stack, chat, "1:1")
    await edited_picture(stack, chat, timeout=60)
    (task,) = tasks(stack)
    assert len(task.input_urls) == 14


async def test_kie_refusing_an_edit_is_explained_like_any_refusal(stack):
    chat = 760_006
    await stack.start_bot()
    await send_photo_to_edit(stack, chat, "something forbidden [fail]", "Nano Banana Edit", "auto")
    await wait_text(stack, chat, t("status.content_refused", "ru"), exact=True, timeout=30)
    assert stack.photos_for(chat) == []


async def test_edit_this_picture_takes_the_delivered_result_as_the_input(stack):
    chat = 760_007
    await begin(stack, chat, "Z-Image")
    stack.tg.user_send_text(chat, "a lighthouse")
    await press(stack, chat, "16:9")
    first = await edited_picture(stack, chat)
    await press(stack, chat, "Изменить эту картинку")
    await wait_text(stack, chat, t("edit.ask_change", "ru"), exact=True)
    stack.tg.user_send_text(chat, "сделай ночь")
    await press(stack, chat, "Nano Banana Edit")
    await press(stack, chat, "auto")
    await edited_picture(stack, chat, n=2)
    original, edit = tasks(stack)
    assert edit.input_sha256 == [first.sha256] == [sha(stack.kie.image_bytes(original.task_id))]


async def test_history_again_other_ratio_and_original_for_an_edit(stack):
    chat = 760_008
    await stack.start_bot()
    picture = make_png(20, 20, seed=97)
    stack.tg.user_send_photo(chat, caption="add a moon", image=picture)
    await press(stack, chat, "Nano Banana Edit")
    await press(stack, chat, "auto")
    photo = await edited_picture(stack, chat)
    uploads = len(stack.kie.upload_calls)

    stack.tg.user_send_command(chat, "/history")
    text = await wait_text(stack, chat, t("history.title", "ru"))
    assert "Nano Banana Edit · 📎1 · auto · ✅ готово" in text and "«add a moon»" in text

    await press(stack, chat, "Ещё раз")  # Again: Kie still has the upload → the same URL, nothing re-uploaded
    await edited_picture(stack, chat, n=2)
    first, again = tasks(stack)
    assert again.input_urls == first.input_urls and len(stack.kie.upload_calls) == uploads
    assert again.body["input"]["prompt"] == "add a moon"

    await press(stack, chat, "Другой формат")
    await stack.tg.wait_for(lambda: said(stack, chat).count(t("ask_ratio", "ru")) == 2)
    await press(stack, chat, "16:9")
    await edited_picture(stack, chat, n=3)
    ratio = tasks(stack)[-1]
    assert ratio.body["input"]["image_size"] == "16:9" and ratio.input_urls == first.input_urls

    stack.kie.expire_uploads()  # past Kie's keeping: Again uploads the picture again
    await press(stack, chat, "Ещё раз")
    await edited_picture(stack, chat, n=4)
    assert len(stack.kie.upload_calls) == uploads + 1 and tasks(stack)[-1].input_sha256 == [sha(picture)]

    await press(stack, chat, "Оригинал")
    await stack.tg.wait_for(lambda: stack.tg.documents, timeout=10)
    assert stack.tg.documents[0].sha256 == stack.photos_for(chat)[-1].sha256 != photo.sha256


async def test_help_tells_about_edits(stack):
    chat = 760_009
    await stack.start_bot()
    stack.tg.user_send_command(chat, "/help")
    text = await wait_text(stack, chat, "Правка картинок")
    assert "Nano Banana Edit (≤ 10), Seedream 4.5 Edit (≤ 14)" in text and "Z-Image картинки не правит" in text
