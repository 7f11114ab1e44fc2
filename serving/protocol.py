"""The server's wire format: OpenAI's chat and text completions, checked field by field.

``parse_request`` turns a request body into a ``GenerationRequest`` or raises a
``RequestError`` that names the field at fault; ``RequestError.body`` is OpenAI's error
object, so the official clients raise it as ``openai.BadRequestError`` (400) or
``openai.NotFoundError`` (404, an unknown model) with our message. Nothing is decoded
before a request has passed every check.

The response builders at the end write the OpenAI objects; what MARA adds is namespaced
under a ``mara`` key of each choice (decisions, fallbacks, accepted-candidate histogram;
in a stream, each token's accepted candidate), which OpenAI clients keep as extra fields.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from envs.generation import position_histogram
from envs.mdp import Draw

ALIGNED, UPSTREAM = "mara", "upstream"
MODELS = (ALIGNED, UPSTREAM)
ROLES = ("system", "user", "assistant")
MAX_CHOICES = 8  # n: more answers per request than this is a mistake, not a use
MAX_STOPS = 4  # as OpenAI
MAX_TEMPERATURE = 2.0  # as OpenAI
MAX_TOP_K = 1000


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and the field at fault."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class GenerationRequest:
    """A checked request. ``temperature``/``top_k``/``top_p`` say how its answers are drawn
    (``draw``); left out (None), the server's settings."""

    kind: str  # "chat" | "completion"
    model: str
    messages: tuple[dict, ...] = ()  # chat: {"role", "content"} with text content
    prompt: str = ""  # completion: raw text, continued without a chat template
    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage

    @property
    def display_prompt(self) -> str:
        """The prompt as text, for the records (the last user message of a chat)."""
        if self.kind == "completion":
            return self.prompt
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else self.messages[-1]["content"]

    def draw(self, server: Draw) -> Draw:
        """How this request's answers are drawn: its settings over the ``server``'s. For
        ``mara`` they never change the candidate set the agent judges (``envs.mdp.Draw``;
        temperature 0 is deterministic: greedy decisions and continuation); for ``upstream``
        they are its candidate set."""
        return Draw(self.temperature, self.top_k, self.top_p).over(server)


# --------------------------------------------------------------------------- parsing
def parse_request(body: bytes | str, kind: str, max_context: int) -> GenerationRequest:
    """Check a request body of ``/v1/chat/completions`` (kind "chat") or ``/v1/completions``
    (kind "completion"); ``max_context`` bounds ``max_tokens``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RequestError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(data).__name__}")

    model = data.get("model")
    if not isinstance(model, str):
        raise RequestError("'model' is required: one of " + ", ".join(MODELS), param="model")
    if model not in MODELS:
        raise RequestError(f"the model {model!r} does not exist; this server has {', '.join(MODELS)}",
                           param="model", status=404, code="model_not_found")

    fields: dict = {"kind": kind, "model": model}
    if kind == "chat":
        fields["messages"] = _messages(data.get("messages"))
        max_tokens_name = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    else:
        fields["prompt"] = _prompt(data.get("prompt"))
        max_tokens_name = "max_tokens"
    fields["max_tokens"] = _optional_int(data, max_tokens_name, 1, max_context, "the model's context")
    fields["temperature"] = _optional_number(data, "temperature", 0.0, MAX_TEMPERATURE, include_low=True)
    fields["top_p"] = _optional_number(data, "top_p", 0.0, 1.0, include_low=False)
    fields["top_k"] = _optional_int(data, "top_k", 1, MAX_TOP_K)
    fields["seed"] = _optional_int(data, "seed", -(2**63), 2**63 - 1, "a 64-bit integer")
    fields["n"] = _optional_int(data, "n", 1, MAX_CHOICES) or 1
    fields["stop"] = _stop(data.get("stop"))
    stream = data.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(f"'stream' must be true or false, got {stream!r}", param="stream")
    fields["stream"] = bool(stream)
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", param="stream_options")
    fields["include_usage"] = bool(options.get("include_usage", False))
    return GenerationRequest(**fields)


def _messages(messages) -> tuple[dict, ...]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' is required: a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with 'role' and 'content'", param=where)
        if m.get("role") not in ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {m.get('role')!r}",
                               param=f"{where}.role")
        out.append({"role": m["role"], "content": _text_content(m.get("content"), f"{where}.content")})
    if not any(m["content"].strip() for m in out):
        raise RequestError("every message is empty: give the model something to answer", param="messages")
    return tuple(out)


def _text_content(content, where: str) -> str:
    """A message's text: a string, or OpenAI's list of parts whose text parts are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
            raise RequestError(f"{where}: only text parts are supported", param=where)
        return "".join(p["text"] for p in content)
    raise RequestError(f"{where} must be a string, got {type(content).__name__}", param=where)


def _prompt(prompt) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError("'prompt' is required: a string (or a list of one string)", param="prompt")
    if not prompt.strip():
        raise RequestError("'prompt' is empty: give the model something to continue", param="prompt")
    return prompt


def _optional_int(data: dict, name: str, low: int, high: int, why: str = "") -> int | None:
    """An integer field in [low, high] (None when left out); ``why``: what the bound is."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{name}' must be an integer, got {value!r}", param=name)
    _check_bounds(name, value, low, high, include_low=True, why=why)
    return value


def _optional_number(data: dict, name: str, low: float, high: float, include_low: bool) -> float | None:
    """A finite number field in [low, high] (or (low, high]); None when left out."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (float("inf"), float("-inf")):
        raise RequestError(f"'{name}' must be a finite number, got {value!r}", param=name)
    _check_bounds(name, value, low, high, include_low=include_low)
    return float(value)


def _check_bounds(name: str, value, low, high, include_low: bool, why: str = "") -> None:
    """Refuse a value out of range with the bound it crossed: "'max_tokens' must be ≥ 1, got -5"."""
    if (value < low) if include_low else (value <= low):
        raise RequestError(f"'{name}' must be {'≥' if include_low else '>'} {low}, got {value}", param=name)
    if value > high:
        because = f" ({why})" if why else ""
        raise RequestError(f"'{name}' must be ≤ {high}{because}, got {value}", param=name)


def _stop(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RequestError("'stop' must be a non-empty string or a list of them", param="stop")
    if len(stops) > MAX_STOPS:
        raise RequestError(f"'stop' takes at most {MAX_STOPS} strings, got {len(stops)}", param="stop")
    return tuple(stops)


# --------------------------------------------------------------------------- responses
@dataclass
class ChoiceRecord:
    """What a response says about one answer (filled as its tokens arrive)."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    decisions: int = 0
    fallbacks: int = 0
    accepted_positions: list[int] = field(default_factory=list)
    warning: str | None = None  # the server's candidate set is not the agent's (``candidate_set_warning``)

    def mara(self) -> dict:
        histogram = position_histogram(self.accepted_positions)
        about = {"decisions": self.decisions, "fallbacks": self.fallbacks,
                 "accepted_position_histogram": {str(k): v for k, v in histogram.items()}}
        return {**about, "warning": self.warning} if self.warning else about


def new_response_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, choices: list[ChoiceRecord]) -> dict:
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def completion_response(req: GenerationRequest, response_id: str, prompt_tokens: int,
                        choices: list[ChoiceRecord]) -> dict:
    """The whole answer (``stream: false``)."""
    if req.kind == "chat":
        rendered = [{"index": c.index, "message": {"role": "assistant", "content": c.text},
                     "finish_reason": c.finish_reason, "logprobs": None, "mara": c.mara()} for c in choices]
    else:
        rendered = [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None,
                     "mara": c.mara()} for c in choices]
    return {"id": response_id, "object": "chat.completion" if req.kind == "chat" else "text_completion",
            "created": int(time.time()), "model": req.model, "choices": rendered,
            "usage": usage(prompt_tokens, choices)}


def stream_chunk(req: GenerationRequest, response_id: str, index: int, text: str | None = None,
                 tokens: list[tuple[str, int]] | None = None, finished: ChoiceRecord | None = None,
                 role: bool = False) -> dict:
    """One server-sent event of a stream: new text of choice ``index`` (with each token's
    accepted candidate under ``mara.tokens``), the assistant role first, or the choice's end."""
    if req.kind == "chat":
        delta: dict = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
        choice: dict = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": None}
    if tokens:
        choice["mara"] = {"tokens": [{"text": t, "candidate": k} for t, k in tokens]}
    if finished is not None:
        choice["finish_reason"] = finished.finish_reason
        choice["mara"] = finished.mara()
    return {"id": response_id, "object": "chat.completion.chunk" if req.kind == "chat" else "text_completion",
            "created": int(time.time()), "model": req.model, "choices": [choice]}


def usage_chunk(req: GenerationRequest, response_id: str, prompt_tokens: int, choices: list[ChoiceRecord]) -> dict:
    return {"id": response_id, "object": "chat.completion.chunk" if req.kind == "chat" else "text_completion",
            "created": int(time.time()), "model": req.model, "choices": [],
            "usage": usage(prompt_tokens, choices)}


def sse(payload: dict | str) -> str:
    """A server-sent event line (``data: ...`` and a blank line)."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"
