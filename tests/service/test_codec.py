"""``service.codec``: a repeated key is refused wherever it is, whichever way the keys of the
parsed model are counted (the fixed-shape shortcut or the walk)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from service.codec import _count_keys, _fixed_shape, _keyed_fields, _model_counter, parse_body
from service.errors import BadRequest
from service.schemas import (
    Point,
    PredictRequest,
    TFPredictRequest,
    V2InferenceRequest,
    V2RequestInput,
)


def test_fixed_shape_models_are_counted_without_a_walk() -> None:
    assert _fixed_shape(PredictRequest) == (1, (("points", 2),))
    assert _fixed_shape(Point) == (2, ())
    many = PredictRequest.model_validate_json(
        b'{"points": [' + b",".join(b'{"x": 1, "y": 2}' for _ in range(50)) + b"]}"
    )
    assert _count_keys(many) == 101


def test_models_with_optional_fields_are_walked() -> None:
    assert _fixed_shape(V2InferenceRequest) is None
    assert _fixed_shape(TFPredictRequest) is None

    class Optional(BaseModel):
        a: int
        b: int | None = None

    assert _fixed_shape(Optional) is None
    assert _count_keys(Optional(a=1)) == 1 and _count_keys(Optional(a=1, b=2)) == 2


@pytest.mark.parametrize(
    "body",
    [
        b'{"points": [{"x": 1, "y": 2}, {"x": 1, "y": 2, "y": 3}]}',
        b'{"points": [{"x": 1, "y": 2}], "points": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}',
        b'{"points": [{"x": 1, "x": 1, "y": 2}]}',
    ],
)
def test_a_repeated_key_is_refused_at_any_depth(body: bytes) -> None:
    with pytest.raises(BadRequest, match="duplicate key"):
        parse_body(PredictRequest, body)


def test_colons_inside_strings_do_not_refuse_a_good_body() -> None:
    body = (
        b'{"inputs": [{"name": "points:a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}'
    )
    assert parse_body(V2InferenceRequest, body).inputs[0].name == "points:a"


def test_only_fields_that_can_hold_keys_are_walked() -> None:
    assert _keyed_fields(V2RequestInput) == ("parameters",)
    assert _keyed_fields(V2InferenceRequest) == ("parameters", "inputs", "outputs")
    assert _keyed_fields(Point) == ()
    body = (
        b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", '
        b'"data": [1, 2], "parameters": {"a": {"b": 1}}}]}'
    )
    # inputs, name, shape, datatype, data, parameters, a, b: every key counted, none twice.
    assert _count_keys(V2InferenceRequest.model_validate_json(body)) == 8


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", '
        b'"data": [1, 2], "parameters": {"a": 1, "a": 2}}]}',
        b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", '
        b'"data": [1, 2], "parameters": {"a": {"b": 1, "b": 2}}}]}',
        b'{"inputs": [{"name": "points", "shape": [1, 2], "shape": [1, 2], '
        b'"datatype": "FP32", "data": [1, 2]}]}',
    ],
)
def test_a_repeated_key_in_a_v2_request_is_refused(body: bytes) -> None:
    with pytest.raises(BadRequest, match="duplicate key"):
        parse_body(V2InferenceRequest, body)


def test_optional_model_fields_set_to_null_count_as_their_key_only() -> None:
    class Inner(BaseModel):
        a: int

    class Outer(BaseModel):
        inner: Inner | None = None
        many: list[Inner] | None = None

    assert _count_keys(Outer.model_validate_json(b'{"inner": null, "many": null}')) == 2
    full = Outer.model_validate_json(b'{"inner": {"a": 1}, "many": [{"a": 1}, {"a": 2}]}')
    assert _count_keys(full) == 5
    # Found by the fuzzer: a V2 request with "outputs": null and "id": null.
    body = (
        b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],'
        b' "id": null, "outputs": null, "parameters": {"a": {"b": 1}}}'
    )
    assert parse_body(V2InferenceRequest, body).outputs is None
    with pytest.raises(BadRequest, match="duplicate key"):
        parse_body(V2InferenceRequest, body.replace(b'"b": 1', b'"b": 1, "b": 2'))


def test_the_count_stops_once_it_is_enough() -> None:
    body = (
        b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],'
        b' "parameters": {"a": 1, "b": 2, "c": 3}}'
    )
    parsed = V2InferenceRequest.model_validate_json(body)
    counter = _model_counter(V2InferenceRequest)
    assert counter(parsed, None) == 2 + 3 + 4  # inputs, parameters; a, b, c; name .. data
    assert counter(parsed, 2) == 2  # the top level is enough: nothing below is walked
    assert counter(parsed, 5) == 5  # parameters walked, inputs not
