"""The aligned model over HTTP: a Ray Serve application speaking OpenAI's API.

    mara serve --agent runs/<run>/agent.safetensors          # http://127.0.0.1:8000

Each replica of the ``MaraServer`` deployment loads one copy of the upstream LLM and the
agent and runs one ``ServingEngine`` (serving/engine.py): requests that arrive together
are decoded in one batch, rows joining and leaving between positions. Routes:

- ``POST /v1/chat/completions``, ``POST /v1/completions``: OpenAI's wire format, with
  ``stream: true`` as server-sent events; ``model`` is ``mara`` (aligned) or ``upstream``
  (the frozen model alone); MARA's statistics under each choice's ``mara`` key;
- ``GET /v1/models``; ``GET /healthz``; ``GET /metrics`` (Prometheus, this replica's);
  ``GET /v1/mara/stats`` (the engine's counters, for tests and benchmarks);
- ``GET /``: a page that streams both models' answers side by side (serving/static).

``--replicas N`` (or ``--autoscale MIN:MAX``) scales the copies; ``--num-gpus`` gives each a
GPU share. The HTTP proxy binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import Field
from ray import serve

from core.agent_file import (
    AGENT_CUT,
    AGENT_DECISIONS,
    AGENT_GATE,
    AGENT_HORIZON,
    AGENT_THRESHOLD,
    CANDIDATE_FIELDS,
    CONTINUATIONS,
    DECISIONS,
    parse_accept_threshold,
    parse_decline_sentences,
    parse_horizon,
    parse_request_gate,
)
from core.config import AUTO, DTYPES, Device, SamplingConfig
from core.sections import Choice, Int, Number, Text, check, checked, section
from envs.decoder import MODES
from envs.mdp import Draw
from serving.engine import ADMISSIONS, Failed, Finished, Piece, ServingEngine, Submission
from serving.metrics import serving_metrics
from serving.protocol import (
    ALIGNED,
    MODELS,
    ChoiceRecord,
    GenerationRequest,
    RequestError,
    completion_response,
    new_response_id,
    parse_request,
    sse,
    stream_chunk,
    usage_chunk,
)

PAGE = Path(__file__).parent / "static" / "index.html"
APP_NAME = "mara"


def check_autoscale(name: str, value) -> tuple[int, int]:
    """(minimum, maximum) replicas, 0 <= minimum <= maximum, maximum >= 1."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (minimum, maximum), got {value!r}")
    check(f"{name} minimum", value[0], Int(ge=0))
    check(f"{name} maximum", value[1], Int(ge=max(value[0], 1)))
    return tuple(value)


def read_by(parse):
    """A field check that reads a value with ``parse(value, field name)`` (its refusal names the
    field) and keeps the value as given: the replicas resolve it against the agent file."""
    def check(name: str, value):
        parse(value, name)
        return value
    return check


@section
class ServeSettings:
    """What ``mara serve`` was asked for (each replica builds its engine from it)."""

    agent: Text("an agent file; null: the agent shipped for the model; 'untrained': random weights",
                also=(None,)) = None
    model: Text("the upstream LLM; null: the agent's recorded model, else SmolLM2", also=(None,)) = None
    host: Text("address the HTTP proxy binds") = "127.0.0.1"
    port: Int(ge=1, le=65535, doc="port the HTTP proxy listens on") = 8000
    replicas: Int(ge=1, doc="copies of the engine (each loads the upstream and the agent)") = 1
    autoscale: checked(tuple[int, int], check_autoscale, "(min, max) replicas instead of a fixed number",
                       also=(None,)) = None
    num_cpus: Number(ge=0, doc="Ray CPUs per replica") = 1.0
    num_gpus: Number(ge=0, doc="Ray GPUs per replica (a share is fine)") = 0.0
    max_rows: Int(ge=1, doc="answers decoded at once by a replica") = 16
    batch_wait_s: Number(ge=0, le=10, doc="how long a replica waits for requests to batch together") = 0.005
    admission: Choice(ADMISSIONS, "when waiting requests join a batch (serving/engine.py)") = "continuous"
    decisions: Choice((AGENT_DECISIONS, *DECISIONS), "greedy, sampled, or what the agent file recommends") \
        = AGENT_DECISIONS
    horizon: checked(int | str, read_by(parse_horizon), "tokens the agent decides: a number, 'all', or what "
                     "the agent file recommends", also=(None,)) = AGENT_HORIZON
    accept_threshold: checked(float | str, read_by(parse_accept_threshold), "how sure the agent must be to step "
                              "into an answer (core/agent_file.py; 0.5: its mode throughout); 'agent': what the "
                              "agent file recommends", also=(None,)) = AGENT_THRESHOLD
    request_gate: checked(str, read_by(parse_request_gate), "which requests the agent may touch: 'off' (all), "
                          "'embedded' (the shipped harmful-request gate), a response-class head file, or what "
                          "the agent file recommends (rewards/request_gate.py)", also=(None,)) = AGENT_GATE
    decline_sentences: checked(int | str, read_by(parse_decline_sentences), "an answer the agent has stepped into "
                               "ends with its N-th sentence; 'off': answers run to their length; 'agent': what the "
                               "agent file recommends", also=(None,)) = AGENT_CUT
    continuation: Choice(CONTINUATIONS, "past the horizon: the upstream's greedy or sampled tokens; null: as "
                                        "the decisions", also=(None,)) = None
    mode: Choice(MODES, "decoding mode (envs/decoder.py)") = "lazy"
    max_tokens: Int(ge=1, doc="answer length when a request gives none") = 256
    draw: Draw = Field(default=Draw(), description="how answers are drawn where a request does not say (null "
                                                   "fields: the candidate set's)")
    candidates: dict | None = Field(default=None, description="an expert's change to the candidate set the agent "
                                    "judges (temperature / top_k / top_p; null: the one the agent was trained "
                                    "on): every mara answer then carries a warning")
    dtype: Choice((*DTYPES, AUTO), "upstream weights and activations") = "float32"
    device: Device("auto (cuda if available, else cpu), cpu, cuda or cuda:N") = "auto"
    max_ongoing_requests: Int(ge=1, doc="per replica; more wait in Ray Serve's queue") = 256

    def __post_init__(self) -> None:
        unknown = set(self.candidates or {}) - set(CANDIDATE_FIELDS)
        if unknown:
            raise ValueError(f"candidates takes {', '.join(CANDIDATE_FIELDS)}, got {sorted(unknown)}")
        replace(SamplingConfig(), **(self.candidates or {}))  # each value checked


async def _until_done(events: asyncio.Queue, answers: int):
    """A request's events until each of its answers has finished (or the loop failed)."""
    finished = 0
    while finished < answers:
        event = await events.get()
        yield event
        if isinstance(event, Failed):
            return
        finished += isinstance(event, Finished)


def _record(choice: ChoiceRecord, event: Piece | Finished) -> None:
    if isinstance(event, Piece):
        choice.text += event.text
        return
    choice.finish_reason = event.finish_reason
    choice.completion_tokens = event.completion_tokens
    choice.decisions, choice.fallbacks = event.decisions, event.fallbacks
    choice.accepted_positions = list(event.accepted_positions)


# Ray Serve pickles the ingress class when it is decorated: what its methods call is defined above it.
api = FastAPI(title="MARA aligned model", docs_url=None, redoc_url=None)


@serve.deployment(name="MaraServer")
@serve.ingress(api)
class MaraServer:
    def __init__(self, settings: ServeSettings) -> None:
        from envs.generation import AlignedGenerator  # the LLM stack loads in the replica only
        from rewards.request_gate import load_request_gate

        self.settings = settings
        self.generator = AlignedGenerator.from_paths(
            agent=settings.agent, model=settings.model, dtype=settings.dtype, device=settings.device,
            mode=settings.mode, batch_size=settings.max_rows, max_new_tokens=settings.max_tokens,
            candidates=settings.candidates, draw=settings.draw, decisions=settings.decisions,
            horizon=settings.horizon, accept_threshold=settings.accept_threshold,
            decline_sentences=settings.decline_sentences, continuation=settings.continuation)
        self.generator.request_gate = load_request_gate(settings.request_gate, self.generator.agent_path)
        self.llm = self.generator.llm
        try:
            self.replica = serve.get_replica_context().replica_tag
        except Exception:  # outside Serve (a test building the class directly)
            self.replica = str(os.getpid())
        self.metrics = serving_metrics(self.replica)
        self.engine = ServingEngine(self.generator, max_rows=settings.max_rows, batch_wait_s=settings.batch_wait_s,
                                    admission=settings.admission, metrics=self.metrics).start()

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose decoding loop died is replaced."""
        if not self.engine.alive:
            raise RuntimeError("the serving loop has stopped")

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.stop()

    # ------------------------------------------------------------------ routes
    @api.get("/", response_class=HTMLResponse)
    def page(self) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @api.get("/healthz")
    def healthz(self) -> JSONResponse:
        alive = self.engine.alive
        return JSONResponse({"status": "ok" if alive else "loop stopped", "model": self.llm.model_id,
                             "agent": self.generator.agent_path, "replica": self.replica},
                            status_code=200 if alive else 503)

    @api.get("/metrics")
    def metrics_text(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.metrics.prometheus_text(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/v1/models")
    def models(self) -> JSONResponse:
        about = {ALIGNED: {"upstream": self.llm.model_id, "agent": self.generator.agent_path},
                 "upstream": {"upstream": self.llm.model_id}}
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "mara", "mara": about[m]} for m in MODELS]})

    @api.get("/v1/mara/stats")
    def stats(self) -> JSONResponse:
        return JSONResponse({**self.engine.stats(), "replica": self.replica})

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, "chat")

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._complete(request, "completion")

    # ------------------------------------------------------------------ answering
    async def _complete(self, request: Request, kind: str) -> Response:
        try:
            req = parse_request(await request.body(), kind, self.llm.max_context)
            prompt_ids = self._encode(req)
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        response_id = new_response_id(kind)
        if req.stream:  # submitted when the stream starts: a client gone before then costs nothing
            return StreamingResponse(self._stream(req, response_id, prompt_ids), media_type="text/event-stream")
        submission, events = self._submit(req, prompt_ids)
        choices = self._choice_records(req)
        try:
            async for event in _until_done(events, req.n):
                if isinstance(event, Failed):
                    return JSONResponse(RequestError(event.message, status=500).body(), status_code=500)
                _record(choices[event.index], event)
        except asyncio.CancelledError:  # the client went away
            self.engine.cancel(submission)
            raise
        return JSONResponse(completion_response(req, response_id, len(prompt_ids), choices))

    def _submit(self, req: GenerationRequest, prompt_ids: list[int]) -> tuple[Submission, asyncio.Queue]:
        """Hand a request to the engine; its events arrive in the returned queue (the
        engine's thread puts them there through this event loop)."""
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        submission = self.engine.submit(Submission(
            model=req.model, prompt=req.display_prompt, prompt_ids=prompt_ids,
            max_tokens=req.max_tokens or self.settings.max_tokens, draw=req.draw(self.settings.draw),
            on_event=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
            n=req.n, seed=req.seed, stop=req.stop, request=req.request_text))
        return submission, events

    def _choice_records(self, req: GenerationRequest) -> list[ChoiceRecord]:
        """The answers' records; a ``mara`` answer carries the warning of a candidate set that
        is not the agent's (the server log has it from the start)."""
        warning = self.generator.candidate_warning if req.model == ALIGNED else None
        return [ChoiceRecord(i, warning=warning) for i in range(req.n)]

    async def _stream(self, req: GenerationRequest, response_id: str, prompt_ids: list[int]):
        choices = self._choice_records(req)
        prompt_tokens = len(prompt_ids)
        submission, events = self._submit(req, prompt_ids)
        done = False
        try:
            if req.kind == "chat":
                for c in choices:
                    yield sse(stream_chunk(req, response_id, c.index, role=True))
            async for event in _until_done(events, req.n):
                if isinstance(event, Failed):
                    yield sse(RequestError(event.message, status=500).body())
                    break
                _record(choices[event.index], event)
                if isinstance(event, Piece):
                    yield sse(stream_chunk(req, response_id, event.index, text=event.text, tokens=event.tokens))
                else:
                    yield sse(stream_chunk(req, response_id, event.index, finished=choices[event.index]))
            if req.include_usage:
                yield sse(usage_chunk(req, response_id, prompt_tokens, choices))
            yield sse("[DONE]")
            done = True
        finally:
            if not done:  # the client disconnected mid-stream: stop decoding for it
                self.engine.cancel(submission)

    def _encode(self, req: GenerationRequest) -> list[int]:
        param = "messages" if req.kind == "chat" else "prompt"
        try:
            if req.kind == "chat":
                return self.llm.encode_messages(list(req.messages))
            return self.llm.encode_text(req.prompt)
        except ValueError as e:  # longer than the model's context
            raise RequestError(str(e), param=param) from None
        except Exception as e:  # the chat template refused the conversation (roles that must alternate, ...)
            raise RequestError(f"the model's chat template refused the {param}: {e}", param=param) from None


# --------------------------------------------------------------------------- running it
def build_app(settings: ServeSettings):
    """The Ray Serve application: ``MaraServer`` with the replicas and resources asked for."""
    scaling: dict = {"num_replicas": settings.replicas}
    if settings.autoscale is not None:
        low, high = settings.autoscale
        scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                          "target_ongoing_requests": max(settings.max_rows // 2, 1)}}
    return MaraServer.options(
        ray_actor_options={"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus},
        max_ongoing_requests=settings.max_ongoing_requests, **scaling,
    ).bind(settings)


def start_server(settings: ServeSettings, address: str | None = None) -> str:
    """Start (or join) Ray, start Serve's HTTP proxy on ``settings.host:port`` and deploy the
    app; returns its base URL once every replica is up. ``address``: a running cluster
    (default ``$RAY_ADDRESS``; none: a local Ray)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"))
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{settings.host}:{settings.port}"


def stop_server() -> None:
    serve.delete(APP_NAME)
    serve.shutdown()
