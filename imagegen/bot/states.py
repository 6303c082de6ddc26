"""The conversation's states: model → prompt → extra options (if the model has any) → ratio."""

from aiogram.fsm.state import State, StatesGroup


class Flow(StatesGroup):
    choosing_model = State()
    writing_prompt = State()
    choosing_option = State()
    choosing_ratio = State()
