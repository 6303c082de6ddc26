"""What `make demo` prints is right: the log chain in the order it was written (not sorted as
text), and the conversation with every message and edit, numbered in order."""

from pathlib import Path

from tests.demo import chain_lines, conversation
from tests.support.telegram_sim import Call


def test_log_chain_keeps_the_written_order_within_a_millisecond(tmp_path: Path):
    worker = tmp_path / "worker.log"
    bot = tmp_path / "bot.log"
    worker.write_text(
        "2026-12-03 10:00:00,100 INFO imagegen [j1] JOB_CREATED task_id=t\n"
        "2026-12-03 10:00:00,200 INFO imagegen [j2] JOB_CREATED task_id=other\n"
        "2026-12-03 10:00:01,500 INFO imagegen [j1] MARK_DELIVERED message_id=5\n"
        "2026-12-03 10:00:01,500 INFO imagegen [j1] FINISHED outcome=done\n")
    bot.write_text(
        "2026-12-03 10:00:00,050 INFO imagegen [j1] JOB_SUBMITTED workflow_id=gen-zimage-j1\n"
        "2026-12-03 10:00:01,000 INFO imagegen [j1] CALLBACK_RECEIVED task_id=t\n"
        "2026-12-03 10:00:01,000 INFO imagegen [j1] CALLBACK_PARSED task_id=t\n")
    events = [line.split()[5] for line in chain_lines("j1", [worker, bot])]
    assert events == ["JOB_SUBMITTED", "JOB_CREATED", "CALLBACK_RECEIVED", "CALLBACK_PARSED", "MARK_DELIVERED",
                      "FINISHED"]


class _Sim:
    def __init__(self, calls):
        self.calls = calls
        self.answered_callbacks = [{"id": "q1"}]


def _call(method, t, status=200, result=None, **params):
    return Call(method, params, {}, t, status, {"ok": status == 200, "result": result})


def test_conversation_numbers_user_and_bot_steps_with_status_edits_in_order():
    sim = _Sim([
        _call("sendMessage", 1.0, result={"message_id": 2}, chat_id=7, text="Выберите соотношение сторон:",
              reply_markup={"inline_keyboard": [[{"text": "16:9", "callback_data": "r"}]]}),
        _call("answerCallbackQuery", 2.5, result=True, callback_query_id="q1", text="Запускаю"),
        _call("editMessageText", 2.0, result={"message_id": 2}, chat_id=7, message_id=2, text="⏳ Генерация запущена"),
        _call("sendPhoto", 3.0, result={"message_id": 3}, chat_id=7, caption="🖼 Z-Image"),
        _call("editMessageText", 3.1, status=429, chat_id=7, message_id=2, text="✅ not accepted"),
        _call("editMessageText", 4.0, result={"message_id": 2}, chat_id=7, message_id=2, text="✅ Генерация завершена"),
        _call("sendMessage", 4.5, result={"message_id": 9}, chat_id=8, text="another chat"),
    ])
    lines = conversation(sim, [(0.5, "/start"), (1.5, "taps «16:9»")], 7)
    assert lines == [
        "  1. user: /start",
        "  2. bot: message #2 «Выберите соотношение сторон:» [16:9]",
        "  3. user: taps «16:9»",
        "  4. bot: edits #2 «⏳ Генерация запущена»",
        "  5. bot: toast «Запускаю»",
        "  6. bot: photo #3 «🖼 Z-Image»",
        "  7. bot: edits #2 «✅ Генерация завершена»",
    ]
