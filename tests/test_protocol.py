"""The server's wire format (serving/protocol.py): every numeric field of a request is
checked at its bounds, and a refusal says which bound was crossed."""

from __future__ import annotations

import json

import pytest

from envs.mdp import Draw
from serving.protocol import MAX_CHOICES, MAX_TEMPERATURE, MAX_TOP_K, RequestError, parse_request

CONTEXT = 8192


def parse(**fields):
    body = {"model": "mara", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_request(json.dumps(body), "chat", CONTEXT)


@pytest.mark.parametrize("name, accepted", [
    ("max_tokens", [1, CONTEXT]),
    ("max_completion_tokens", [1, CONTEXT]),
    ("temperature", [0, 0.0, 1e-40, MAX_TEMPERATURE]),
    ("top_p", [1e-9, 0.01, 1]),
    ("top_k", [1, MAX_TOP_K]),
    ("seed", [-(2**63), 0, 2**63 - 1]),
    ("n", [1, MAX_CHOICES]),
])
def test_numeric_fields_accept_their_bounds(name, accepted):
    for value in accepted:
        request = parse(**{name: value})
        field = "max_tokens" if name == "max_completion_tokens" else name
        assert getattr(request, field) == value


@pytest.mark.parametrize("name, value, message", [
    ("max_tokens", -5, "'max_tokens' must be ≥ 1, got -5"),
    ("max_tokens", 0, "'max_tokens' must be ≥ 1, got 0"),
    ("max_tokens", CONTEXT + 1, f"'max_tokens' must be ≤ {CONTEXT} (the model's context), got {CONTEXT + 1}"),
    ("max_completion_tokens", -1, "'max_completion_tokens' must be ≥ 1, got -1"),
    ("temperature", -0.1, "'temperature' must be ≥ 0.0, got -0.1"),
    ("temperature", 2.01, "'temperature' must be ≤ 2.0, got 2.01"),
    ("top_p", 0, "'top_p' must be > 0.0, got 0"),
    ("top_p", -1, "'top_p' must be > 0.0, got -1"),
    ("top_p", 1.5, "'top_p' must be ≤ 1.0, got 1.5"),
    ("top_k", 0, "'top_k' must be ≥ 1, got 0"),
    ("top_k", MAX_TOP_K + 1, f"'top_k' must be ≤ {MAX_TOP_K}, got {MAX_TOP_K + 1}"),
    ("seed", -(2**63) - 1, "'seed' must be ≥"),
    ("seed", 2**63, "'seed' must be ≤"),
    ("n", 0, "'n' must be ≥ 1, got 0"),
    ("n", MAX_CHOICES + 1, f"'n' must be ≤ {MAX_CHOICES}, got {MAX_CHOICES + 1}"),
])
def test_out_of_range_values_are_refused_with_the_bound_they_cross(name, value, message):
    with pytest.raises(RequestError) as caught:
        parse(**{name: value})
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.param == name and caught.value.status == 400


@pytest.mark.parametrize("name, value", [("temperature", "hot"), ("top_p", True), ("top_k", 2.5), ("n", "2"),
                                         ("seed", 1.0), ("max_tokens", "ten")])
def test_values_of_the_wrong_type_are_refused(name, value):
    with pytest.raises(RequestError, match=f"'{name}' must be an? (integer|finite number)"):
        parse(**{name: value})


def test_nan_and_infinity_are_refused():
    for text in ("NaN", "Infinity", "-Infinity"):
        body = '{"model": "mara", "messages": [{"role": "user", "content": "hi"}], "temperature": %s}' % text
        with pytest.raises(RequestError, match="'temperature' must be a finite number"):
            parse_request(body, "chat", CONTEXT)


def test_a_requests_sampling_settings_are_its_draw_over_the_servers():
    server = Draw(temperature=0.9, top_p=0.8)
    assert parse().draw(server) == server
    assert parse(temperature=0).draw(server) == Draw(temperature=0.0, top_p=0.8)
    assert parse(temperature=0).draw(server).greedy and parse(top_k=1).draw(server).greedy
    assert not parse(top_p=0.01).draw(server).greedy  # a narrow draw within the set, not a narrower set


@pytest.mark.parametrize("body, status, param, message", [
    ({}, 400, "model", "'model' is required: one of mara, upstream"),
    ({"model": "gpt-4"}, 404, "model", "the model 'gpt-4' does not exist"),
    ({"model": "mara"}, 400, "messages", "'messages' is required"),
    ({"model": "mara", "messages": "hi"}, 400, "messages", "'messages' is required"),
    ({"model": "mara", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role",
     "messages[0].role must be one of system, user, assistant, got 'wizard'"),
    ({"model": "mara", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content",
     "messages[0].content must be a string, got int"),
    ({"model": "mara", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content", "messages[0].content: only text parts are supported"),
    ({"model": "mara", "messages": [{"role": "user", "content": "  "}]}, 400, "messages", "every message is empty"),
    ({"model": "mara", "stop": ["a"] * 5}, 400, "stop", "'stop' takes at most 4 strings, got 5"),
    ({"model": "mara", "stop": [""]}, 400, "stop", "'stop' must be a non-empty string or a list of them"),
    ({"model": "mara", "stream": "yes"}, 400, "stream", "'stream' must be true or false, got 'yes'"),
    ({"model": "mara", "stream_options": 5}, 400, "stream_options", "'stream_options' must be an object"),
    ({"model": "mara", "stream_options": {"include_usage": "x"}}, 400, "stream_options.include_usage",
     "'stream_options.include_usage' must be true or false"),
    ({"model": "mara", "messages": [{"role": "user", "content": "hi"}, 5]}, 400, "messages[1]",
     "messages[1] must be an object with 'role' and 'content'"),
])
def test_malformed_fields_are_refused_naming_the_field(body, status, param, message):
    if "messages" not in body and body.get("model") == "mara" and param != "messages":
        body = {**body, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(RequestError) as caught:
        parse_request(json.dumps(body), "chat", CONTEXT)
    assert (caught.value.status, caught.value.param) == (status, param)
    assert caught.value.message.startswith(message), caught.value.message


def test_a_chat_request_takes_text_parts_stops_and_stream_options():
    request = parse(messages=[{"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "you"}]}],
                    stop="END", stream=True, stream_options={"include_usage": True}, user="ignored")
    assert request.messages == ({"role": "user", "content": "hi you"},)
    assert request.stop == ("END",) and request.stream and request.include_usage and request.n == 1
    assert not parse(stream=True, stream_options={"include_usage": None}).include_usage
    completion = parse_request(json.dumps({"model": "upstream", "prompt": ["Once upon"]}), "completion", CONTEXT)
    assert completion.prompt == "Once upon" and completion.kind == "completion"
    with pytest.raises(RequestError, match="'prompt' is empty"):
        parse_request(json.dumps({"model": "mara", "prompt": " "}), "completion", CONTEXT)
