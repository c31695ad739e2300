"""Every free-text field a command can carry is sealed in the read model.

A field is free text when it takes any string (no pattern, no enumeration): whatever a caseworker
or partner writes there may name the person. This test finds them all in the command bodies, so a
field added later can't slip into the read model in clear.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel

from reintegration.crypto import FREE_TEXT_KEYS
from workflows import model, rules


def _strings(cls: type[BaseModel], seen: set) -> set[str]:
    found: set[str] = set()
    if cls in seen:
        return found
    seen.add(cls)
    for name, field in cls.model_fields.items():
        types = [field.annotation]
        while types:
            t = types.pop()
            args = typing.get_args(t)
            if args:
                types.extend(args)
                if typing.get_origin(t) is typing.Annotated:
                    field_meta = [m for a in args[1:] for m in getattr(a, "metadata", [])]
                    if any(getattr(m, "pattern", None) for m in field_meta):
                        types = [x for x in types if x is not str]
                continue
            if isinstance(t, type) and issubclass(t, BaseModel):
                found |= _strings(t, seen)
            elif t is str and not any(getattr(m, "pattern", None) for m in field.metadata):
                found.add(name)
    return found


def test_every_free_text_field_of_every_command_is_sealed():
    # The task bodies and the owner's reassignment are messages; each step's body lives with its stage.
    bodies = [getattr(model, n) for n in dir(model) if n.endswith("Body")] + [model.ReassignOwner]
    bodies += [rule.body for rule in rules.STEPS.values()]
    free_text = set().union(*(_strings(b, set()) for b in bodies))
    assert {"notes", "reason", "threats", "measure", "route", "authority_reference"} <= free_text  # the finder works
    assert free_text - {"sub", "agency", "delivery_id"} <= FREE_TEXT_KEYS, free_text - FREE_TEXT_KEYS
