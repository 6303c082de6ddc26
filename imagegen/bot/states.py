"""The conversation's states: model → prompt → extra options (if the model has any) → ratio.

An edit (issue 16): pictures (collecting_images, until a description comes) → edit model → the same
options and ratio steps."""

from aiogram.fsm.state import State, StatesGroup


class Flow(StatesGroup):
    choosing_model = State()
    writing_prompt = State()
    choosing_option = State()
    choosing_ratio = State()
    collecting_images = State()  # an edit's pictures are in; waiting for the description
    choosing_edit_model = State()
