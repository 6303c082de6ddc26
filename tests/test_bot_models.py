"""Each model through the conversation, its extra step and back buttons, with the Kie request body
checked; the registry's bodies against the Kie simulator's checks of each documented input."""

import itertools

import pytest

from imagegen.i18n import t
from imagegen.models import EDIT_MODELS, MODELS, edit_models_for
from tests.support.chat import begin, button, later, press, press_and_wait, said, wait_text
from tests.support.kie_sim import input_problem


# ------------------------------------------------------------------ the registry, offline

@pytest.mark.parametrize("key", sorted(MODELS))
def test_every_ratio_and_option_makes_a_body_kie_accepts(key):
    model = MODELS[key]
    values = [o.values for o in model.options]
    urls = [f"https://files.example/{i}.png" for i in range(model.images.max_count)] if model.edits else None
    for ratio, *chosen in itertools.product(model.aspect_ratios, *values):
        options = {o.name: v for o, v in zip(model.options, chosen)}
        body = model.kie_request("a cat", ratio, options, callback_url="https://x/cb", image_urls=urls)
        assert body["model"] == model.kie_model and body["callBackUrl"] == "https://x/cb"
        assert input_problem(body["model"], body["input"]) is None, body
    longest = model.kie_input("x" * model.max_prompt_chars, model.aspect_ratios[0], image_urls=urls)
    assert input_problem(model.kie_model, longest) is None


def test_edit_models_take_their_documented_number_of_pictures_and_z_image_none():
    assert {m.kie_model: m.images.max_count for m in EDIT_MODELS} == {"google/nano-banana-edit": 10,
                                                                       "seedream/4.5-edit": 14}
    assert all(m.images.field == "image_urls" and m.images.max_bytes == 10 * 1024 * 1024
               and m.images.types == ("image/jpeg", "image/png", "image/webp") for m in EDIT_MODELS)
    assert "zimage" not in {m.key for m in EDIT_MODELS} and not MODELS["zimage"].edits
    assert [m.key for m in edit_models_for(11)] == ["seedream45_edit"] and edit_models_for(15) == []
    nano = MODELS["nanobanana_edit"]
    with pytest.raises(ValueError):
        nano.kie_input("p", "auto")  # an edit needs a picture
    with pytest.raises(ValueError):
        nano.kie_input("p", "auto", image_urls=["https://x/a.png"] * 11)
    with pytest.raises(ValueError):
        MODELS["zimage"].kie_input("p", "1:1", image_urls=["https://x/a.png"])
    assert nano.kie_input("p", "auto", image_urls=["https://x/a.png"]) == {
        "prompt": "p", "image_size": "auto", "output_format": "png", "image_urls": ["https://x/a.png"]}


def test_the_simulator_refuses_edit_inputs_kie_documents_as_invalid():
    url = "https://files.example/a.png"
    assert input_problem("google/nano-banana-edit", {"prompt": "x"})  # image_urls required
    assert input_problem("google/nano-banana-edit", {"prompt": "x", "image_urls": []})
    assert input_problem("google/nano-banana-edit", {"prompt": "x", "image_urls": [url] * 11})
    assert input_problem("google/nano-banana-edit", {"prompt": "x", "image_urls": ["ftp://a/b.png"]})
    assert input_problem("google/nano-banana-edit", {"prompt": "x", "image_urls": [url] * 10}) is None
    assert input_problem("seedream/4.5-edit", {"prompt": "x", "image_urls": [url] * 15, "aspect_ratio": "1:1",
                                               "quality": "basic"})
    assert input_problem("seedream/4.5-edit", {"prompt": "x", "image_urls": [url] * 14, "aspect_ratio": "1:1",
                                               "quality": "basic"}) is None
    assert input_problem("seedream/4.5-edit", {"prompt": "x" * 3001, "image_urls": [url], "aspect_ratio": "1:1",
                                               "quality": "basic"})
    assert input_problem("z-image", {"prompt": "x", "image_urls": [url]})  # Z-Image takes no picture


def test_the_simulator_refuses_what_kie_documents_as_invalid():
    assert input_problem("z-image", {"prompt": "x" * 1001, "aspect_ratio": "1:1"})
    assert input_problem("z-image", {"prompt": "x", "aspect_ratio": "21:9"})
    assert input_problem("seedream/4.5-text-to-image", {"prompt": "x", "aspect_ratio": "1:1"})  # quality required
    assert input_problem("seedream/4.5-text-to-image", {"prompt": "x", "aspect_ratio": "1:1", "quality": "ultra"})
    assert input_problem("google/nano-banana", {"prompt": "x", "aspect_ratio": "1:1"})  # not its field name
    assert input_problem("google/nano-banana", {"prompt": "x", "output_format": "gif"})
    assert input_problem("google/nano-banana", {"prompt": "x" * 5001})
    assert input_problem("flux", {"prompt": "x"})
    assert input_problem("google/nano-banana", {"prompt": "x" * 5000, "image_size": "auto"}) is None


def test_defaults_and_unknown_options():
    seedream = MODELS["seedream45"]
    assert seedream.clean_options({}) == {"quality": "basic"}
    assert seedream.clean_options({"quality": "ultra", "x": "y"}) == {"quality": "basic"}
    assert MODELS["nanobanana"].kie_input("p", "auto") == {"prompt": "p", "image_size": "auto", "output_format": "png"}
    with pytest.raises(ValueError):
        MODELS["zimage"].kie_input("p", "21:9")


# ------------------------------------------------------------------ through the bot

def ratio_buttons(stack, chat):
    message_id, _ = button(stack, chat, "1:1")
    return [b for b, _ in stack.tg.inline_buttons(chat, message_id)]


@pytest.mark.e2e
async def test_z_image_body(stack):
    chat = 720_001
    await begin(stack, chat, "Z-Image")
    stack.tg.user_send_text(chat, "a red fox")
    await stack.tg.wait_for(lambda: button(stack, chat, "4:3"))
    assert ratio_buttons(stack, chat) == ["1:1", "4:3", "3:4", "16:9", "9:16", t("button.back", "ru")]
    await press(stack, chat, "4:3")
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    (task,) = stack.kie.tasks.values()
    assert task.body["model"] == "z-image"
    assert task.body["input"] == {"prompt": "a red fox", "aspect_ratio": "4:3"}
    assert task.body["callBackUrl"].startswith(stack.config.public_base_url + "/kie/callback?")


@pytest.mark.e2e
async def test_seedream_asks_the_quality_and_every_step_goes_back(stack):
    chat = 720_002
    stack.tg.set_user_language(chat, "en")
    await stack.start_bot()
    stack.tg.user_send_command(chat, "/start")
    await press_and_wait(stack, chat, "Seedream 4.5", "Model: Seedream 4.5. Describe the picture")
    await press_and_wait(stack, chat, "Back", t("welcome", "en"))  # prompt step → the models
    await press_and_wait(stack, chat, "Seedream 4.5", "Model: Seedream 4.5. Describe the picture")
    assert "up to 3000 characters" in said(stack, chat)[-1]
    stack.tg.user_send_text(chat, "a castle")
    await wait_text(stack, chat, "Choose the quality:", exact=True)
    await press_and_wait(stack, chat, "Back", "Model: Seedream 4.5. Describe the picture")  # quality → prompt
    stack.tg.user_send_text(chat, "a castle at dawn", date=later())
    await stack.tg.wait_for(lambda: said(stack, chat).count("Choose the quality:") == 2)
    await press_and_wait(stack, chat, "High (4K)", "Choose the aspect ratio")
    assert ratio_buttons(stack, chat) == ["1:1", "4:3", "3:4", "16:9", "9:16", "2:3", "3:2", "21:9", "⬅️ Back"]
    await press_and_wait(stack, chat, "Back", "Choose the quality:")  # ratio step → the quality again
    await press_and_wait(stack, chat, "High (4K)", "Choose the aspect ratio")
    await press(stack, chat, "21:9")
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    (task,) = stack.kie.tasks.values()
    assert task.body["model"] == "seedream/4.5-text-to-image"
    assert task.body["input"] == {"prompt": "a castle at dawn", "aspect_ratio": "21:9", "quality": "high"}
    job = await stack.pool.fetchrow("SELECT id, model, workflow_id, options::text AS o FROM generation_jobs"
                                    " WHERE user_id = $1", chat)
    assert job["model"] == "seedream45" and job["o"] == '{"quality": "high"}'
    # the workflow's id names its model (not `zimage-…` as before issue 15), and it is the one that ran
    assert job["workflow_id"] == f"gen-seedream45-{job['id']}"
    assert (await stack.client.get_workflow_handle(job["workflow_id"]).result())["outcome"] == "done"
    assert f"wf={job['workflow_id']}" in task.callback_url
    assert stack.photos_for(chat)[0].caption == "🖼 Seedream 4.5 · 21:9"


@pytest.mark.e2e
async def test_nano_banana_takes_a_full_message_and_sends_its_own_fields(stack):
    chat = 720_003
    await begin(stack, chat, "Nano Banana")
    await wait_text(stack, chat, "до 4096 символов")
    prompt = ("a banana " * 500)[:4096]
    stack.tg.user_send_text(chat, prompt)
    await stack.tg.wait_for(lambda: button(stack, chat, "auto"))
    assert ratio_buttons(stack, chat) == ["1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9",
                                          "auto", "⬅️ Назад"]
    await press(stack, chat, "auto")
    await stack.tg.wait_for(lambda: stack.photos_for(chat), timeout=20)
    (task,) = stack.kie.tasks.values()
    assert task.body["model"] == "google/nano-banana"
    assert task.body["input"] == {"prompt": prompt.strip(), "image_size": "auto", "output_format": "png"}
    await wait_text(stack, chat, t("status.done", "ru"), exact=True)
