"""Request decoding shared by every protocol adapter: JSON bodies into validated models and
float32 points, and pydantic's errors into one message that names the field and the limit.

It knows no transport: HTTP routes and gRPC services decode through the same functions, so a
bad input reads the same whichever way it came.
"""

from __future__ import annotations

import collections.abc
import functools
import json
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from service.errors import BadRequest, InvalidInput

M = TypeVar("M", bound=BaseModel)

_MAX_ERRORS_SHOWN = 3


def to_points(values: Any, *, validated: bool = False) -> NDArray[np.float32]:
    """float32 ``(n, 2)``; values beyond float32 become inf, which ``infer`` then refuses.

    ``validated``: every value already passed the schemas' float32-range bound (``FiniteFloat``),
    so the cast cannot overflow and numpy's error-state switch (a context variable round
    trip on every call) is skipped.
    """
    if validated:
        return np.asarray(values, dtype=np.float32).reshape(-1, 2)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, dtype=np.float32).reshape(-1, 2)


def parse_body(model: type[M], body: bytes | str) -> M:
    """Validate a JSON body against ``model``; raise errors that name the field and limit.

    A body repeating a key in one object (``{"x": 1, "x": 2}``) is refused with 400: parsers
    disagree on which value wins (pydantic keeps the last, others the first), and a proxy or
    log reading the other one would see a different request than the model did.
    """
    try:
        # model_validate_json's own work, without its Python wrapper (its checks are of
        # arguments not passed here)
        parsed: M = model.__pydantic_validator__.validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None
    # Every key is followed by a colon, so a body with no more colons than the parsed model
    # has keys cannot repeat one: the common case costs a bytes.count and a count of the
    # model's keys (its top-level fields first, often enough on their own). Otherwise (colons
    # inside strings, or a real duplicate) a second, exact parse decides.
    colons = body.count(b":") if isinstance(body, bytes) else body.count(":")
    if colons > _model_counter(type(parsed))(parsed, colons):
        _reject_duplicate_keys(body)
    return parsed


class _DuplicateKey(Exception):
    pass


def _reject_duplicate_keys(body: bytes | str) -> None:
    """BadRequest naming the first key a JSON object repeats, if one does."""

    def check(pairs: list[tuple[str, Any]]) -> None:
        if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise _DuplicateKey(key)
                seen.add(key)

    try:
        json.loads(body, object_pairs_hook=check)
    except _DuplicateKey as exc:
        key = _show(exc.args[0])
        raise BadRequest(
            f"body: duplicate key {key} in one object; each key may appear once", field="body"
        ) from None
    except (ValueError, RecursionError):  # pydantic accepted it; nothing more to say
        return


def _count_keys(value: Any) -> int:
    """Distinct keys in a validated model (a lower bound where it cannot see: never above)."""
    if isinstance(value, BaseModel):
        return _model_counter(type(value))(value, None)
    if isinstance(value, dict):
        return len(value) + sum(_count_keys(item) for item in value.values())
    if isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, BaseModel):
            flat = _flat_field_count(type(first))
            if flat is not None and all(type(item) is type(first) for item in value):
                return flat * len(value)  # e.g. 1024 Points: no per-item Python work
        if isinstance(first, BaseModel | dict | list):
            return sum(_count_keys(item) for item in value)
    return 0


KeyCounter = Callable[[Any], int]
ModelCounter = Callable[[Any, int | None], int]


@functools.cache
def _model_counter(model: type[BaseModel]) -> ModelCounter:
    """:func:`_count_keys` for instances of ``model``, worked out once per class: the set
    fields, then what the fields that can hold keys hold (until the count is ``enough``),
    each counted by a function chosen for its type (a request is counted in a few steps,
    not a walk of type checks)."""
    shape = _fixed_shape(model)
    if shape is not None:  # e.g. PredictRequest: 1 + 2 per point, no walk
        keys, lists = shape
        if len(lists) == 1:
            ((field, per),) = lists

            def count_one_list(value: BaseModel, enough: int | None = None) -> int:
                return keys + per * len(getattr(value, field))

            return count_one_list

        def count_fixed(value: BaseModel, enough: int | None = None) -> int:
            return keys + sum([per * len(getattr(value, name)) for name, per in lists])

        return count_fixed
    keyed = tuple(
        (name, _field_counter(model.model_fields[name].annotation)) for name in _keyed_fields(model)
    )

    def count(value: BaseModel, enough: int | None = None) -> int:
        names = value.__pydantic_fields_set__
        total = len(names)
        for name, counter in keyed:
            if enough is not None and total >= enough:
                break
            if name in names:
                total += counter(getattr(value, name))
        return total

    return count


def _field_counter(annotation: Any) -> KeyCounter:
    """How to count the keys in a field's value: a model's own counter for a model, or a
    list of one model class (``list[V2RequestInput]``), else the general walk."""
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        members = [annotation]
    if len(members) == 1:
        (member,) = members
        if isinstance(member, type) and issubclass(member, BaseModel):
            model = _model_counter(member)
            return lambda value: 0 if value is None else model(value, None)
        item = typing.get_args(member)
        if (
            typing.get_origin(member) is list
            and len(item) == 1
            and isinstance(item[0], type)
            and issubclass(item[0], BaseModel)
        ):
            counter = _model_counter(item[0])
            # An optional field can be set to null: no keys.
            return lambda value: 0 if value is None else sum([counter(one, None) for one in value])
    return _count_keys


@functools.cache
def _keyed_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields whose values can hold keys (a model, a dict or anything untyped somewhere
    in their type): a V2 input's name, shape, datatype and data are never walked."""
    return tuple(
        name for name, info in model.model_fields.items() if _can_hold_keys(info.annotation)
    )


def _can_hold_keys(annotation: Any) -> bool:
    if annotation is Any or annotation is object or annotation is dict:
        return True
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel | dict)
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, dict | collections.abc.Mapping):
        return True
    return any(_can_hold_keys(arg) for arg in typing.get_args(annotation))


@functools.cache
def _fixed_shape(model: type[BaseModel]) -> tuple[int, tuple[tuple[str, int], ...]] | None:
    """``(keys, ((list field, keys per item), ...))`` when every instance has the same keys
    but for the length of its lists: all fields required, each a scalar or a list of flat
    models (see :func:`_flat_field_count`); None otherwise."""
    keys = 0
    lists: list[tuple[str, int]] = []
    for name, info in model.model_fields.items():
        if not info.is_required():
            return None
        keys += 1
        annotation = info.annotation
        if annotation in (int, float, str, bool):
            continue
        (item,) = typing.get_args(annotation) or (None,)
        if typing.get_origin(annotation) is not list or not (
            isinstance(item, type) and issubclass(item, BaseModel)
        ):
            return None
        per_item = _flat_field_count(item)
        if per_item is None:
            return None
        lists.append((name, per_item))
    return keys, tuple(lists)


@functools.cache
def _flat_field_count(model: type[BaseModel]) -> int | None:
    """Keys every instance has, when all fields are required scalars (like Point), else None."""
    fields = model.model_fields.values()
    if all(f.is_required() and f.annotation in (int, float, str, bool) for f in fields):
        return len(fields)
    return None


def validation_error(errors: list[Any], *, prefix: str = "") -> BadRequest | InvalidInput:
    """One ServiceError summarising pydantic-style errors (the deepest first, up to three)."""
    if not errors:
        return InvalidInput("invalid request")
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", err.get("msg", "invalid JSON"))
            return BadRequest(f"body: not valid JSON ({reason})", field="body")
    # Unions report one error per member; the deepest ones matched the shape best.
    depth = max(len(_clean_loc(e.get("loc", ()))) for e in errors)
    ordered = [e for e in errors if len(_clean_loc(e.get("loc", ()))) == depth]
    seen: set[str] = set()
    parts: list[str] = []
    first_field: str | None = None
    for err in ordered:
        field = prefix + format_loc(err.get("loc", ()))
        text = f"{field or 'body'}: {_describe(err)}"
        if text in seen:
            continue
        seen.add(text)
        parts.append(text)
        first_field = first_field or field or None
        if len(parts) == _MAX_ERRORS_SHOWN:
            break
    extra = len(ordered) - len(parts)
    message = "; ".join(parts) + (f" (and {extra} more errors)" if extra > 0 else "")
    return InvalidInput(message, field=first_field)


def format_loc(loc: Any) -> str:
    """``("points", 0, "x")`` -> ``points[0].x``; drops pydantic's union-member tags."""
    out = ""
    for part in _clean_loc(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _clean_loc(loc: Any) -> list[Any]:
    # Union members appear in loc as type names such as "list[constrained-float]".
    return [p for p in loc if isinstance(p, int) or "[" not in p]


def _describe(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "finite_number":
        return "must be a finite number (no NaN or Infinity)"
    if kind in ("float_type", "float_parsing"):
        return f"must be a JSON number, got {_show(err.get('input'))}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole JSON number such as 2 (not 2.0), got {_show(err.get('input'))}"
    if kind in ("less_than_equal", "greater_than_equal"):
        bound = ctx.get("le", ctx.get("ge"))
        if isinstance(bound, float) and abs(bound) > 1e38:
            shown = _show(err.get("input"))
            return f"must be a finite number in float32 range (|v| <= 3.4e38), got {shown}"
        sign = "<=" if kind == "less_than_equal" else ">="
        return f"must be {sign} {bound}, got {_show(err.get('input'))}"
    if kind == "extra_forbidden":
        return "unknown field (not allowed)"
    if kind == "missing":
        return "field required"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"allows at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    return f"{err.get('msg', 'invalid value')}, got {_show(err.get('input'))}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
