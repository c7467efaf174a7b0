"""docs/asyncapi.yaml against the message classes: a field added to a message (or taken
away) and not to the document fails here, and so does a document field with no class."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from ffserve.errors import ErrorCode
from ffserve.wire.binary import BinaryFrame
from ffserve.wire.messages import (
    CLIENT_TYPES,
    SERVER_TYPES,
    Delivery,
    FileSpec,
    OutputTarget,
    ProgressRequest,
    UploadInput,
    UrlInput,
)
from ffserve.wire.options import OPERATIONS

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
MESSAGES = {**CLIENT_TYPES, **{tag: cls for cls, tag in SERVER_TYPES.items()}}
# Nested objects of start_job, with the field their JSON adds beside the class's own.
NESTED = {
    FileSpec: (),
    UploadInput: ("source",),
    UrlInput: ("source",),
    Delivery: (),
    ProgressRequest: (),
}
NESTED[OutputTarget] = ()
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` ("#/components/...") to what it names."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def payload_of(document: dict[str, Any], tag: str) -> dict[str, Any]:
    message = document["components"]["messages"][tag]
    assert message["name"] == tag
    return resolve(document, message["payload"])


def scalar(hint: Any) -> Any:
    """`int | None` -> int; anything else as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return hint


def check_object(
    document: dict[str, Any], schema: dict[str, Any], cls: type[Any], added: tuple[str, ...]
) -> None:
    fields = attrs.fields(cls)
    properties = schema.get("properties", {})
    assert set(properties) == {f.name for f in fields} | set(added), cls.__name__
    required = {f.name for f in fields if f.default is attrs.NOTHING} | set(added)
    assert set(schema.get("required", [])) == required, cls.__name__
    hints = typing.get_type_hints(cls)
    for field in fields:
        kind = JSON_TYPES.get(scalar(hints[field.name]))
        if kind is not None:
            described = resolve(document, properties[field.name])
            assert described["type"] == kind, f"{cls.__name__}.{field.name}"


def test_the_document_is_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"].startswith("3.")
    assert document["servers"]["local"]["protocol"] == "ws"


@pytest.mark.parametrize("tag", sorted(MESSAGES))
def test_every_message_matches_its_class(document: dict[str, Any], tag: str) -> None:
    payload = payload_of(document, tag)
    assert payload["properties"]["type"] == {"const": tag}
    check_object(document, payload, MESSAGES[tag], ("type",))


@pytest.mark.parametrize("cls", list(NESTED), ids=lambda cls: cls.__name__)
def test_every_nested_object_matches_its_class(document: dict[str, Any], cls: type[Any]) -> None:
    check_object(document, document["components"]["schemas"][cls.__name__], cls, NESTED[cls])


def test_no_message_without_a_class(document: dict[str, Any]) -> None:
    text = {
        tag
        for tag, message in document["components"]["messages"].items()
        if message["contentType"] == "application/json"
    }
    assert text == set(MESSAGES)


def test_every_message_is_on_the_channel_and_in_an_operation(document: dict[str, Any]) -> None:
    channel = document["channels"]["jobs"]["messages"]
    assert set(channel) == set(document["components"]["messages"])
    sent: set[str] = set()
    received: set[str] = set()
    for operation in document["operations"].values():
        names = {ref["$ref"].rsplit("/", 1)[1] for ref in operation["messages"]}
        (sent if operation["action"] == "send" else received).update(names)
        replies = operation.get("reply", {}).get("messages", [])
        received.update(ref["$ref"].rsplit("/", 1)[1] for ref in replies)
    assert sent == {*CLIENT_TYPES, "upload"}
    assert received == {*SERVER_TYPES.values(), "delivery"}


def test_closed_sets_match_the_code(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    codes = {v for k, v in vars(ErrorCode).items() if k.isupper()}
    assert set(schemas["Error"]["properties"]["code"]["enum"]) == codes
    assert schemas["StartJob"]["properties"]["operation"]["enum"] == list(OPERATIONS)


def test_binary_frames_are_described(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    header_fields = {f.name for f in attrs.fields(BinaryFrame)} - {"payload", "extra"}
    for tag in ("upload", "delivery"):
        assert messages[tag]["contentType"] == "application/octet-stream"
        assert resolve(document, messages[tag]["payload"])["format"] == "binary"
        header = resolve(document, messages[tag]["headers"])
        assert header_fields <= set(header["properties"])
    delivery = resolve(document, messages["delivery"]["headers"])["properties"]
    assert {"offset", "final", "index", "count"} <= set(delivery)
