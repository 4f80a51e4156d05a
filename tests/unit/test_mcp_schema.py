"""An MCP tool's JSON input schema as the pydantic model its calls are validated with."""

from typing import Any

import pytest
from pydantic import ValidationError

from app.tools.mcp import model_from_schema

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "description": "The title."},
        "count": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
        "ratio": {"type": "number", "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "mode": {"enum": ["fast", "slow"]},
        "id": {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[a-z]+$"}]},
        "maybe": {"type": ["string", "null"]},
        "where": {"$ref": "#/$defs/Place"},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
        "anything": {},
        "class": {"type": "string"},
        "model_config": {"type": "string"},
    },
    "required": ["title"],
    "$defs": {
        "Place": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        }
    },
}


def test_a_full_call_is_taken_and_dumped_by_its_json_names() -> None:
    model = model_from_schema("notes_add_arguments", SCHEMA)
    call = {
        "title": "t",
        "count": 3,
        "ratio": 0.5,
        "tags": ["a", "b"],
        "mode": "slow",
        "id": "abc",
        "maybe": None,
        "where": {"city": "Oslo"},
        "extra": {"n": 1},
        "anything": [1, {"x": None}],
        "class": "c",
        "model_config": "m",
    }
    parsed = model.model_validate(call)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == call


def test_unset_fields_are_not_sent() -> None:
    model = model_from_schema("t", SCHEMA)
    parsed = model.model_validate({"title": "t"})
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == {"title": "t"}
    assert "default" not in model.model_json_schema()["properties"]["ratio"]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "t", "count": 11}, "count"),
        ({"title": "t", "ratio": 1}, "ratio"),
        ({"title": "t", "tags": ["a", "b", "c"]}, "tags"),
        ({"title": "t", "mode": "medium"}, "mode"),
        ({"title": "t", "id": "ABC"}, "id"),
        ({"title": "t", "where": {}}, "where.city"),
        ({"title": "t", "extra": {"n": "one"}}, "extra.n"),
        ({"title": "t", "surprise": 1}, "surprise"),
    ],
)
def test_a_call_the_schema_refuses_names_the_field(call: dict[str, Any], field: str) -> None:
    model = model_from_schema("t", SCHEMA)
    with pytest.raises(ValidationError) as caught:
        model.model_validate(call)
    located = {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}
    assert any(loc == field or loc.startswith(field + ".") for loc in located), located


def test_a_schema_that_allows_extra_fields_takes_them_and_a_recursive_ref_takes_any_json() -> None:
    model = model_from_schema(
        "t",
        {
            "type": "object",
            "properties": {"node": {"$ref": "#/$defs/Node"}},
            "additionalProperties": True,
            "$defs": {
                "Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}
            },
        },
    )
    parsed = model.model_validate({"node": {"child": {"child": {}}}, "more": 1})
    assert parsed.model_dump(by_alias=True, exclude_unset=True) == {
        "node": {"child": {"child": {}}},
        "more": 1,
    }
