"""The server's wire format: OpenAI's chat and text completions, as pydantic models.

``ChatRequest`` and ``CompletionRequest`` say what each endpoint takes, with each field's
type and bounds; ``parse_request`` turns a request body into a ``GenerationRequest`` or raises a
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
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

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

    @property
    def request_text(self) -> str:
        """What the user asked, as the request gate reads it: the prompt, or every user message
        of a chat in order (a request made in an earlier turn stays in view)."""
        if self.kind == "completion":
            return self.prompt
        return "\n".join(m["content"] for m in self.messages if m["role"] == "user") or self.display_prompt

    def draw(self, server: Draw) -> Draw:
        """How this request's answers are drawn: its settings over the ``server``'s. For
        ``mara`` they never change the candidate set the agent judges (``envs.mdp.Draw``;
        temperature 0 is deterministic: greedy decisions and continuation); for ``upstream``
        they are its candidate set."""
        return Draw(self.temperature, self.top_k, self.top_p).over(server)


# --------------------------------------------------------------------------- parsing
# The wire models: what OpenAI's two endpoints take, as pydantic checks it (strict types: no
# "2" for 2, no 2.0 for an integer, no true for a number; no NaN or infinity). Fields other
# clients send and MARA does not use (user, logprobs, ...) are ignored.
MaxTokens = Annotated[int | None, Field(ge=1)]  # and <= the model's context (``_within_context``)


class _TextPart(BaseModel):
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    role: Literal[ROLES]
    content: str | list[_TextPart]

    @property
    def text(self) -> str:
        """A message's text: a string, or OpenAI's list of parts whose text parts are joined."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _StreamOptions(BaseModel):
    include_usage: bool | None = None


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True)

    model: str
    max_tokens: MaxTokens = None
    temperature: Annotated[float | None, Field(ge=0.0, le=MAX_TEMPERATURE)] = None
    top_p: Annotated[float | None, Field(gt=0.0, le=1.0)] = None
    top_k: Annotated[int | None, Field(ge=1, le=MAX_TOP_K)] = None
    seed: Annotated[int | None, Field(ge=-(2**63), le=2**63 - 1)] = None
    n: Annotated[int | None, Field(ge=1, le=MAX_CHOICES)] = None
    stop: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]],
                                                         Field(max_length=MAX_STOPS)] | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None

    @field_validator("model")
    @classmethod
    def _served(cls, value: str) -> str:
        if value not in MODELS:
            raise PydanticCustomError("model_not_found", "")
        return value

    @field_validator("max_tokens", "max_completion_tokens", check_fields=False)
    @classmethod
    def _within_context(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value > info.context["max_context"]:
            raise PydanticCustomError("less_than_equal", "", {"le": info.context["max_context"]})
        return value


class ChatRequest(_Request):
    """A ``/v1/chat/completions`` request body."""

    messages: Annotated[list[_Message], Field(min_length=1)]
    max_completion_tokens: MaxTokens = None  # the newer name of max_tokens

    @model_validator(mode="after")
    def _something_to_answer(self) -> ChatRequest:
        if not any(m.text.strip() for m in self.messages):
            raise PydanticCustomError("empty_messages", "")
        return self


class CompletionRequest(_Request):
    """A ``/v1/completions`` request body."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    @field_validator("prompt")
    @classmethod
    def _something_to_continue(cls, value: str | list[str]) -> str:
        text = value if isinstance(value, str) else value[0]
        if not text.strip():
            raise PydanticCustomError("empty_prompt", "")
        return text


def parse_request(body: bytes | str, kind: str, max_context: int) -> GenerationRequest:
    """Check a request body of ``/v1/chat/completions`` (kind "chat") or ``/v1/completions``
    (kind "completion"); ``max_context`` bounds ``max_tokens``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RequestError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(data).__name__}")
    model = ChatRequest if kind == "chat" else CompletionRequest
    try:
        wire = model.model_validate(data, context={"max_context": max_context})
    except ValidationError as e:
        raise _request_error(e.errors()[0], data) from None
    fields: dict = {}
    if kind == "chat":
        fields["messages"] = tuple({"role": m.role, "content": m.text} for m in wire.messages)
    else:
        fields["prompt"] = wire.prompt
    stops = [wire.stop] if isinstance(wire.stop, str) else wire.stop or []
    max_tokens = getattr(wire, "max_completion_tokens", None) or wire.max_tokens
    return GenerationRequest(kind=kind, model=wire.model, max_tokens=max_tokens, temperature=wire.temperature,
                             top_k=wire.top_k, top_p=wire.top_p, seed=wire.seed, n=wire.n or 1, stop=tuple(stops),
                             stream=bool(wire.stream), include_usage=bool(wire.stream_options and
                                                                          wire.stream_options.include_usage),
                             **fields)


# What a refused field's message says, by the field (its first name in the error's location).
_FIELD_MESSAGES = {
    "model": "'model' is required: one of " + ", ".join(MODELS),
    "messages": "'messages' is required: a non-empty list of {role, content} objects",
    "prompt": "'prompt' is required: a string (or a list of one string)",
    "stop": "'stop' must be a non-empty string or a list of them",
    "stream_options": "'stream_options' must be an object",
}


def _request_error(error: dict, data: dict) -> RequestError:
    """pydantic's first complaint about a request as OpenAI's error, naming the field and, for a
    number out of range, the bound it crossed ("'max_tokens' must be ≥ 1, got -5")."""
    loc, kind, got = error["loc"], error["type"], error.get("input")
    name = str(loc[0]) if loc else ""
    param = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or None
    bounds = {"greater_than_equal": "≥", "greater_than": ">", "less_than_equal": "≤"}
    if kind == "model_not_found":
        return RequestError(f"the model {got!r} does not exist; this server has {', '.join(MODELS)}",
                            param="model", status=404, code="model_not_found")
    if kind == "empty_messages":
        return RequestError("every message is empty: give the model something to answer", param="messages")
    if kind == "empty_prompt":
        return RequestError("'prompt' is empty: give the model something to continue", param="prompt")
    if name == "messages" and len(loc) >= 2:  # one message: its role, its content, or not an object at all
        where, field_name = f"messages[{loc[1]}]", loc[2] if len(loc) >= 3 else None
        message = data["messages"][loc[1]]
        if field_name == "role":
            return RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {message.get('role')!r}",
                                param=f"{where}.role")
        if field_name == "content" and isinstance(message.get("content"), list):
            return RequestError(f"{where}.content: only text parts are supported", param=f"{where}.content")
        if field_name == "content":
            return RequestError(f"{where}.content must be a string, got {type(message.get('content')).__name__}",
                                param=f"{where}.content")
        return RequestError(f"{where} must be an object with 'role' and 'content'", param=where)
    if name == "stream_options" and len(loc) >= 2:
        return RequestError(f"'stream_options.{loc[1]}' must be true or false, got {got!r}", param=param)
    if name == "stop" and isinstance(data.get("stop"), list) and len(data["stop"]) > MAX_STOPS:
        return RequestError(f"'stop' takes at most {MAX_STOPS} strings, got {len(data['stop'])}", param="stop")
    if name in _FIELD_MESSAGES:
        return RequestError(_FIELD_MESSAGES[name], param=name)
    if name == "stream":
        return RequestError(f"'stream' must be true or false, got {got!r}", param=name)
    if kind in bounds:
        bound = next(iter(error["ctx"].values()))
        why = " (the model's context)" if kind == "less_than_equal" and name.startswith("max_") else ""
        return RequestError(f"'{name}' must be {bounds[kind]} {bound}{why}, got {got}", param=name)
    what = "an integer" if kind.startswith("int") else "a finite number"
    return RequestError(f"'{name}' must be {what}, got {got!r}", param=name)


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
