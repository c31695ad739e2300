"""Forms built from the API's own pydantic models: the fields a page shows (read from the model's
JSON schema), what a posted form means as the model's input, and the model's errors beside the
fields they are about, in words.

One model, one set of rules: a page validates the posted form with the very model the API
validates its JSON body with (a step's ``STEPS[step].body``, ``CaseCreate``, ``AssignTaskBody``,
...) and sends the result along the API's own path.

How each kind of field is shown (``templates/forms.html`` draws them):

| in the model                                     | on the page                                        |
| ------------------------------------------------ | -------------------------------------------------- |
| a nested model                                   | a fieldset; an optional one left empty is omitted  |
| a list of models (a plan's measures, services)   | a few repeated fieldsets; empty ones are ignored   |
| an enum, or a string with a pattern ``^(a|b)$``  | a select, each value in words (``label()``)        |
| a list of enum values                            | a group of checkboxes                              |
| a list of strings                                | a textarea, one per line                           |
| ``date``                                         | ``<input type=date>``                              |
| ``bool``                                         | a checkbox (not ticked: false)                     |
| a number                                         | ``<input type=number>`` with its min, max and step |
| a string of up to 200 characters, or longer      | a text input, or a textarea                        |

A text left empty is not sent (the model's default applies, or its "required" error shows). A page
may turn a field into a select of its own choices (``options``: e.g. the agencies that may take a
service), or into a row of radio buttons (``Options(widget="radios")``: an answer on a scale, with
its "none" choice as a radio button of its own, sent empty). Not supported, as no body of the API
has them: unions of two models, dicts, tuples, lists of lists or of numbers, date-times.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import ImmutableMultiDict, MultiDict

from api.web.form_words import (
    COUNTRY,
    FIELD_HINTS,
    FIELD_LABELS,
    IDENTIFIER_MESSAGE,
    ITEM_LEGENDS,
    MESSAGES,
    OPTIONAL_HINTS,
    OTHER_MESSAGE,
    PATTERN_MESSAGES,
)
from api.web.labels import LABELS, N_

M = TypeVar("M", bound=BaseModel)
Translate = Callable[[str], str]
Raw = ImmutableMultiDict[str, Any]

# How many repeated fieldsets a list of models shows when nothing was sent yet.
REPEAT = 3
_CHOICES = re.compile(r"^\^\(([A-Za-z0-9_|-]+)\)\$$")
_IDENTIFIER_START = "^[A-Za-z0-9]"


@dataclass
class Choice:
    value: str
    text: str
    detail: str = ""  # words beside the text, smaller (a radio button's anchor on a scale: "very poor")


@dataclass
class Field:
    """One input: its posted ``name`` (dotted: ``person.first_name``, ``measures.1.service``)."""

    name: str
    id: str
    label: str
    widget: str  # text, textarea, date, checkbox, select, radios, number, lines, choices
    required: bool = False
    within: str = ""  # the legend of the fieldset holding it (for the list of errors)
    hint: str = ""
    error: str = ""
    choices: list[Choice] = field(default_factory=list)
    groups: list[tuple[str, list[Choice]]] = field(default_factory=list)  # a select's optgroups
    empty_choice: str = ""  # a select's option for "none" (its words), if it has one
    value: str = ""
    checked: bool = False
    selected: list[str] = field(default_factory=list)
    minimum: str = ""
    maximum: str = ""
    step: str = ""
    maxlength: int | None = None

    @property
    def describedby(self) -> str:
        ids = [f"{self.id}-hint" if self.hint else "", f"{self.id}-error" if self.error else ""]
        return " ".join(i for i in ids if i)


@dataclass
class Fieldset:
    name: str
    id: str
    legend: str
    items: list[Field | Fieldset]
    hint: str = ""
    error: str = ""
    repeated: bool = False  # a list of models: its items are the fieldsets within
    widget = "fieldset"

    @property
    def describedby(self) -> str:
        ids = [f"{self.id}-hint" if self.hint else "", f"{self.id}-error" if self.error else ""]
        return " ".join(i for i in ids if i)


@dataclass
class Form:
    """The fields to draw, with the values sent (or given first) and the errors found."""

    items: list[Field | Fieldset]
    errors: list[str] = field(default_factory=list)

    @property
    def repeats(self) -> bool:
        """Whether the form holds a list of repeated fieldsets (which may take more rows)."""
        return any(isinstance(i, Fieldset) and i.repeated for i in self.walk())

    @property
    def fields_in_error(self) -> list[Field | Fieldset]:
        return [i for i in self.walk() if i.error]

    def walk(self) -> Iterator[Field | Fieldset]:
        stack: list[Field | Fieldset] = list(reversed(self.items))
        while stack:
            item = stack.pop()
            yield item
            if isinstance(item, Fieldset):
                stack.extend(reversed(item.items))

    def find(self, name: str) -> Field | Fieldset | None:
        return next((i for i in self.walk() if i.name == name), None)

    @property
    def invalid(self) -> bool:
        return bool(self.errors) or any(i.error for i in self.walk())

    def add_error(self, name: str | None, message: str) -> None:
        """An error about a field (beside it), or about the whole form (``name`` None or unknown)."""
        target = self.find(name) if name else None
        if target is None:
            self.errors.append(message)
        elif not target.error:
            target.error = message


# An override of a field's choices: plain choices, or optgroups (label, choices); and the words of
# its "none" option, if a value may be left out; drawn as a select, or as radio buttons ("radios").
@dataclass
class Options:
    choices: list[Choice] = field(default_factory=list)
    groups: list[tuple[str, list[Choice]]] = field(default_factory=list)
    empty: str = ""
    widget: str = "select"


# --- The model's schema ----------------------------------------------------------------------------


class _Schema:
    def __init__(self, model: type[BaseModel]) -> None:
        schema = model.model_json_schema()
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.root = schema

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """The node itself, its ``$ref`` followed and an optional's ``anyOf [X, null]`` unwrapped."""
        if "anyOf" in node:
            others = [n for n in node["anyOf"] if n.get("type") != "null"]
            if len(others) == 1:
                outer = {k: v for k, v in node.items() if k != "anyOf"}
                return {**self.resolve(others[0]), **outer}
            raise TypeError("a union of two kinds of value has no form field")
        if "$ref" in node:
            target = self.defs[node["$ref"].rsplit("/", 1)[-1]]
            outer = {k: v for k, v in node.items() if k != "$ref"}
            return {**self.resolve(target), **outer}
        return node

    def kind(self, node: dict[str, Any]) -> str:
        kind = node.get("type")
        if "properties" in node or kind == "object":
            return "object"
        if kind == "array":
            items = self.resolve(node.get("items", {}))
            if "properties" in items:
                return "repeat"
            if items.get("type") == "string":
                return "choices" if "enum" in items else "lines"
            raise TypeError("a list of this kind has no form field")
        if kind == "boolean":
            return "checkbox"
        if kind in ("number", "integer"):
            return "number"
        if kind == "string":
            if node.get("format") == "date":
                return "date"
            if "enum" in node or _CHOICES.match(node.get("pattern", "")):
                return "select"
            return "textarea" if node.get("maxLength", 0) > 200 else "text"
        raise TypeError(f"a value of type {kind} has no form field")


def _choices_of(node: dict[str, Any]) -> list[str]:
    if "enum" in node:
        return [str(v) for v in node["enum"]]
    match = _CHOICES.match(node.get("pattern", ""))
    return match.group(1).split("|") if match else []


def _texts(raw: Raw, name: str) -> list[str]:
    return [v for v in raw.getlist(name) if isinstance(v, str)]


def _first(raw: Raw, name: str) -> str:
    texts = _texts(raw, name)
    return texts[0] if texts else ""


def _count(raw: Raw, name: str, limit: int, more: int = 0) -> int:
    """How many repeated fieldsets of the list ``name`` the form holds (by the indices sent)."""
    pattern = re.compile(re.escape(name) + r"\.(\d{1,3})\.")
    found = [int(m.group(1)) for key in raw.keys() if (m := pattern.match(key))]
    return min(max([REPEAT, *(i + 1 for i in found)]) + more, limit)


# --- Building the fields ---------------------------------------------------------------------------


def build(
    model: type[BaseModel],
    _: Translate,
    *,
    prefix: str = "",
    raw: Raw | None = None,
    initial: Mapping[str, Any] | None = None,
    options: Mapping[str, Options] | None = None,
    errors: Errors | None = None,
    more: int = 0,
) -> Form:
    """The form of ``model``: its fields with the values sent (``raw``), or else the ``initial``
    values (a dict as the model takes), or else the model's defaults; ``errors`` (from ``check``)
    beside their fields. ``prefix`` keeps the ids of two forms on one page apart; ``options`` gives
    a field (by its name, without the dots) a select of its own."""
    schema = _Schema(model)
    values = raw if raw is not None else as_raw(initial or {})
    builder = _Builder(schema, _, prefix, values, options or {}, posted=raw is not None, more=more)
    form = Form(items=builder.children(schema.root, ""))
    for name, text in errors.found if errors else []:
        form.add_error(_nearest(form, name), text)
    return form


@dataclass
class Errors:
    """What the model found wrong in a posted form: (the form's field name, the message in words)."""

    found: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.found)


@dataclass
class _Builder:
    schema: _Schema
    _: Translate
    prefix: str
    raw: Raw
    options: Mapping[str, Options]
    posted: bool
    more: int = 0  # blank repeated fieldsets to add to each list (the form's "more rows" button)

    def _default(self, name: str) -> bool:
        """Whether the field shows the model's default: nothing was sent, nor given for it."""
        return not self.posted and name not in self.raw

    def children(self, node: dict[str, Any], path: str, within: str = "") -> list[Field | Fieldset]:
        required = set(node.get("required", []))
        items: list[Field | Fieldset] = []
        for key, child in node.get("properties", {}).items():
            name = f"{path}.{key}" if path else key
            item = self.item(key, name, self.schema.resolve(child), key in required)
            if isinstance(item, Field):
                item.within = within
            items.append(item)
        return items

    def _id(self, name: str) -> str:
        return self.prefix + name.replace(".", "-").replace("_", "-")

    def item(self, key: str, name: str, node: dict[str, Any], required: bool) -> Field | Fieldset:
        kind = self.schema.kind(node)
        label = self._(FIELD_LABELS.get(key, key.replace("_", " ").capitalize()))
        hint = FIELD_HINTS.get(key) or ("" if required else OPTIONAL_HINTS.get(key, ""))
        hint = self._(hint) if hint else ""
        if kind == "object":
            return Fieldset(name, self._id(name), label, self.children(node, name, label), hint)
        if kind == "repeat":
            items_node = self.schema.resolve(node["items"])
            legend = ITEM_LEGENDS.get(key, N_("Item %(number)s"))
            sets: list[Field | Fieldset] = []
            for i in range(_count(self.raw, name, node.get("maxItems", 20), self.more)):
                numbered = self._(legend) % {"number": i + 1}
                children = self.children(items_node, f"{name}.{i}", numbered)
                sets.append(Fieldset(f"{name}.{i}", self._id(f"{name}.{i}"), numbered, children))
            return Fieldset(name, self._id(name), label, sets, hint, repeated=True)
        f = Field(name=name, id=self._id(name), label=label, widget=kind, required=required, hint=hint)
        if kind == "checkbox":
            f.checked = (node.get("default") is True) if self._default(name) else bool(_first(self.raw, name))
        elif kind == "choices":
            f.choices = [Choice(v, self._label(v)) for v in _choices_of(self.schema.resolve(node["items"]))]
            f.selected = _texts(self.raw, name)
        elif kind == "lines":
            f.value = "\n".join(_texts(self.raw, name))
        else:
            default = node.get("default")
            usable = isinstance(default, str | int | float) and self._default(name)
            f.value = str(default) if usable else _first(self.raw, name)
        if kind == "select" or key in self.options:
            self._select(f, key, node, required)
        if kind == "number":
            f.minimum = str(node.get("minimum", ""))
            f.maximum = str(node.get("maximum", ""))
            f.step = "1" if node.get("type") == "integer" else ("0.01" if node.get("maximum", 2) <= 1 else "any")
        if kind in ("text", "textarea"):
            f.maxlength = node.get("maxLength")
        return f

    def _select(self, f: Field, key: str, node: dict[str, Any], required: bool) -> None:
        override = self.options.get(key)
        f.widget = override.widget if override is not None else "select"
        may_be_none = not required and node.get("default") is None
        if override is not None:
            f.choices, f.groups = override.choices, override.groups
            f.empty_choice = override.empty or (self._("None") if may_be_none else "")
        else:
            f.choices = [Choice(v, self._label(v)) for v in _choices_of(node)]
            f.empty_choice = self._("None") if may_be_none else ""
        if not f.empty_choice and not f.value and f.widget == "select":
            f.empty_choice = self._("Choose")

    def _label(self, value: str) -> str:
        return self._(LABELS.get(value, value))


def as_raw(values: Mapping[str, Any], path: str = "") -> MultiDict:
    """A dict as the model takes it, as a form would send it (``person.first_name``, ``measures.0.measure``)."""
    pairs: list[tuple[str, str]] = []

    def add(name: str, value: Any) -> None:
        if value is None or value is False:
            return
        if isinstance(value, Mapping):
            for key, item in value.items():
                add(f"{name}.{key}" if name else str(key), item)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                add(f"{name}.{i}" if isinstance(item, Mapping) else name, item)
        elif value is True:
            pairs.append((name, "1"))
        elif isinstance(value, Enum):
            pairs.append((name, str(value.value)))
        elif isinstance(value, date):
            pairs.append((name, value.isoformat()))
        else:
            pairs.append((name, str(value)))

    add(path, values)
    return MultiDict(pairs)


# --- Reading a posted form -------------------------------------------------------------------------


def parse(model: type[BaseModel], raw: Raw) -> tuple[dict[str, Any], dict[str, str]]:
    """The posted form as the model's input, and where each kept repeated fieldset came from (the
    model's ``measures.1`` is the form's ``measures.2`` when the form's second one was left empty)."""
    schema = _Schema(model)
    moved: dict[str, str] = {}
    data, _ = _parse_object(schema, schema.root, "", raw, moved)
    return data, moved


def _parse_object(
    schema: _Schema, node: dict[str, Any], path: str, raw: Raw, moved: dict[str, str]
) -> tuple[dict[str, Any], bool]:
    data: dict[str, Any] = {}
    filled = False
    required = set(node.get("required", []))
    for key, child in node.get("properties", {}).items():
        name = f"{path}.{key}" if path else key
        value, present = _parse_value(schema, schema.resolve(child), name, raw, moved, key in required)
        if value is not _OMIT:
            data[key] = value
        filled = filled or present
    return data, filled


_OMIT = object()


def _parse_value(
    schema: _Schema, node: dict[str, Any], name: str, raw: Raw, moved: dict[str, str], required: bool
) -> tuple[Any, bool]:
    """The value of one field (``_OMIT`` for none: the model's default applies) and whether the
    person filled it in."""
    kind = schema.kind(node)
    if kind == "object":
        data, filled = _parse_object(schema, node, name, raw, moved)
        return (data if filled or required else _OMIT), filled
    if kind == "repeat":
        items_node = schema.resolve(node["items"])
        kept: list[dict[str, Any]] = []
        for i in range(_count(raw, name, node.get("maxItems", 20))):
            item, filled = _parse_object(schema, items_node, f"{name}.{i}", raw, moved)
            if filled:
                if len(kept) != i:
                    moved[f"{name}.{len(kept)}"] = f"{name}.{i}"
                kept.append(item)
        return kept, bool(kept)
    if kind == "checkbox":
        ticked = bool(_first(raw, name))
        return ticked, ticked
    if kind == "choices":
        chosen = [v for v in _texts(raw, name) if v]
        return chosen, bool(chosen)
    if kind == "lines":
        lines = [line.strip() for text in _texts(raw, name) for line in text.splitlines() if line.strip()]
        return lines, bool(lines)
    text = _first(raw, name).strip()
    if kind == "text" and node.get("pattern") == COUNTRY:
        text = text.upper()
    return (text if text else _OMIT), bool(text)


def check(model: type[M], _: Translate, raw: Raw) -> tuple[M | None, Errors]:
    """Validate a posted form with the model: its value, or None and what is wrong, in words, by
    the form's field names."""
    data, moved = parse(model, raw)
    try:
        return model.model_validate(data), Errors()
    except ValidationError as invalid:
        found = [
            (_form_name([str(p) for p in e["loc"]], moved), message(e, _)) for e in invalid.errors(include_url=False)
        ]
        return None, Errors(found)


def _form_name(loc: list[str], moved: Mapping[str, str]) -> str:
    name = ".".join(loc)
    for model_name, form_name in sorted(moved.items(), key=lambda m: -len(m[0])):
        if name == model_name or name.startswith(model_name + "."):
            return form_name + name[len(model_name) :]
    return name


def _nearest(form: Form, name: str) -> str | None:
    """The field the error is about, or the nearest fieldset holding it (an item of a list of
    checkboxes is its list)."""
    parts = name.split(".") if name else []
    while parts:
        candidate = ".".join(parts)
        if form.find(candidate) is not None:
            return candidate
        parts.pop()
    return None


def message(error: Mapping[str, Any], _: Translate) -> str:
    """One of pydantic's errors in words."""
    kind = str(error.get("type", ""))
    context = dict(error.get("ctx") or {})
    if kind == "string_pattern_mismatch":
        pattern = str(context.get("pattern", ""))
        if pattern in PATTERN_MESSAGES:
            return _(PATTERN_MESSAGES[pattern])
        if pattern.startswith(_IDENTIFIER_START):
            return _(IDENTIFIER_MESSAGE)
        if _CHOICES.match(pattern):
            return _(MESSAGES["enum"])
        return _(OTHER_MESSAGE)
    text = MESSAGES.get(kind)
    if kind == "too_short" and context.get("min_length") == 1:
        text = N_("Give at least one.")
    if text is None:
        return _(OTHER_MESSAGE)
    try:
        return _(text) % {k: _number(v) for k, v in context.items()}
    except (KeyError, ValueError):
        return _(OTHER_MESSAGE)


def _number(value: Any) -> str:
    """A bound as people write it: 1, not 1.0."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


# --- A form of a page --------------------------------------------------------------------------------


def new_key() -> str:
    """A fresh idempotency key for a rendered form: the form sent twice acts once."""
    return str(uuid.uuid4())


@dataclass
class PostForm:
    """One form of a page: where it goes, its fields, and its idempotency key."""

    action: str
    form: Form
    key: str = field(default_factory=new_key)
    open: bool = False  # sent and refused: shown open, with its errors
