"""Property-based tests of the message codec: whatever JSON (or not) a client sends as
a text message, decoding it (and its options) answers with a message or a client error
with a code, never another exception, and the error text stays short."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ffserve.errors import FFserveError
from ffserve.wire.messages import StartJob, decode_client_message, job_id_of
from ffserve.wire.options import OPERATIONS, parse_options

FUZZ = settings(max_examples=400, deadline=None, derandomize=True)

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["type", "job_id", "operation", "input", "options", "source", "url", "files", "delivery",
     "output", "timestamp", "count", "speed_factor", "filters", "start_time", "end_time"]
)  # fmt: skip
NEAR_VALID = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["start_job", "cancel_job", "ping", "pong", ""]) | SCALARS,
        "job_id": st.text(max_size=140) | SCALARS,
        "operation": st.sampled_from(sorted(OPERATIONS)) | SCALARS,
        "input": st.fixed_dictionaries({"source": st.sampled_from(["upload", "url"]) | SCALARS})
        | JSON,
        "options": st.dictionaries(KEYS, JSON, max_size=5) | JSON,
    }
)


def decodes_cleanly(text: str) -> None:
    try:
        message = decode_client_message(text)
    except FFserveError as exc:
        assert exc.code and len(exc.message) < 2048, exc.message
        return
    if isinstance(message, StartJob):
        try:
            parse_options(message.operation, message.options)
        except FFserveError as exc:
            assert exc.code and len(exc.message) < 2048, exc.message


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_decodes_to_a_message_or_a_coded_error(text: str) -> None:
    decodes_cleanly(text)
    job_id_of(text)  # best effort, never raises


@FUZZ
@given(JSON | NEAR_VALID)
def test_any_json_decodes_to_a_message_or_a_coded_error(data: Any) -> None:
    try:
        text = json.dumps(data)
    except ValueError:  # NaN and friends: not JSON a client can send
        return
    decodes_cleanly(text)


@FUZZ
@given(st.integers(min_value=1, max_value=3000))
def test_deep_nesting_is_a_clean_error(depth: int) -> None:
    decodes_cleanly("[" * depth + "]" * depth)
    decodes_cleanly('{"type": "ping", "x": ' + "[" * depth + "]" * depth + "}")
