"""Every message and state model is fully defined when its module is imported.

A model whose annotations name a class defined further down is left incomplete by pydantic and
rebuilt on first use. Outside the workflow sandbox that rebuild quietly succeeds; inside it the
case workflow's input could not be decoded and every journey's first task failed (the breakage
behind one CI run that timed out). This test fails on such an ordering, in a second.
"""

from __future__ import annotations

import importlib
import pkgutil

import pydantic
import pytest

import workflows


def _models() -> list[type[pydantic.BaseModel]]:
    found: list[type[pydantic.BaseModel]] = []
    for info in pkgutil.walk_packages(workflows.__path__, prefix="workflows."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, pydantic.BaseModel)
                and value.__module__ == module.__name__
            ):
                found.append(value)
    return found


MODELS = _models()


def test_the_workflow_models_are_found() -> None:
    names = {model.__name__ for model in MODELS}
    assert {"CaseRun", "JourneyState", "OpenItem"} <= names, names


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.__module__}.{m.__name__}")
def test_model_is_complete_at_import(model: type[pydantic.BaseModel]) -> None:
    assert model.__pydantic_complete__, (
        f"{model.__module__}.{model.__name__} names a type defined after it; define it first"
    )
