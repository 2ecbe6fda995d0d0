"""The OpenAI-compatible HTTP API: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/health``.

`create_app` builds a FastAPI app around a `RequestServer` (policy + `GenerationBackend`), so the
same app serves the in-process `LocalBackend` (tests, ``--local``) and the remote UE client.
Each request: the controller picks the split from the observed channel, the backend generates,
and the response carries the OpenAI fields (``choices``, ``usage``) plus splitrl's own figures in
an extra ``splitrl`` field (split, SNR, emulated TTFT/energy, fallback); the same record goes to
the decision-log sinks. Streaming uses server-sent events in the OpenAI chunk format.

Every ``/v1`` route needs ``Authorization: Bearer <token>`` (compared in constant time). Bad
requests (missing/invalid token, malformed or too deeply nested JSON, unknown model, too many
tokens, sampling values outside `splitrl.serve.schema`'s ranges, text that is not valid Unicode)
get the OpenAI error object ``{"error": {"message", "type", "param", "code"}}`` and a 4xx status;
the server keeps serving. Prompts are tokenised off the event loop (a 1 MB prompt must not stall
``/health``). A streamed answer equals the non-streamed one: text that could still turn into a
stop string is held back until it cannot (as vLLM does). A client that disconnects mid-stream
stops its generation (and with it the edge's session) at the next token.
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import threading
import time
import uuid
from typing import Any, Callable, Sequence

from fastapi import Request  # module level: FastAPI resolves the routes' string annotations here

from splitrl.controller.serving import DecisionRecord, RequestServer
from splitrl.runtime.sampling import SamplingConfig
from splitrl.serve.schema import GREEDY_BELOW, MIN_TOP_P, RequestError, validate_request
from splitrl.errors import UsageError

__all__ = ["APIError", "create_app"]


class APIError(Exception):
    """An error answered as the OpenAI error object with HTTP ``status``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def splitrl_figures(record: DecisionRecord, num_layers: int) -> dict[str, Any]:
    """The extra ``splitrl`` field of a response."""
    return {
        "request": record.request, "split": record.split, "num_layers": num_layers, "snr_db": record.snr_db,
        "policy": record.policy, "transport": record.transport, "decision_us": record.decision_us,
        "emulated_ttft_s": record.emulated_ttft_s, "emulated_tpot_s": record.emulated_tpot_s,
        "emulated_ue_energy_j_per_token": record.emulated_ue_energy_j_per_token, "bytes_on_air": record.bytes_on_air,
        "fallback": record.fallback, "fallback_segments": record.fallback_segments,
        "edge_available": record.edge_available, "tokens_per_s": record.tokens_per_s,
    }


class _Request:
    """A validated completion request."""

    def __init__(self, prompt_ids, max_tokens: int, sampling: SamplingConfig, stream: bool, include_usage: bool,
                 stop: list[str]) -> None:
        self.prompt_ids, self.max_tokens, self.sampling = prompt_ids, max_tokens, sampling
        self.stream, self.include_usage, self.stop = stream, include_usage, stop


def _truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could still be the start of a stop string (so a stream
    must not send them yet): the longest suffix of ``text`` that is a proper prefix of some stop string."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class _Cancelled(Exception):
    """Raised from the token callback when the client of a stream went away: ends the generation."""


class _AppState:
    """What the routes share: the server, its tokenizer and model view, the limits, the token and the sinks."""

    def __init__(self, server: RequestServer, *, token: str, model_name: str, max_tokens_limit: int,
                 default_max_tokens: int, sinks: Sequence[Any], max_body_bytes: int) -> None:
        self.server, self.backend = server, server.backend
        self.tokenizer, self.view = self.backend.tokenizer, self.backend.view
        eos = getattr(self.view.config, "eos_token_id", None)
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) if eos is not None else set()
        self.expected = token.encode()
        self.model_name = model_name
        self.max_tokens_limit, self.default_max_tokens = max_tokens_limit, default_max_tokens
        self.sinks, self.max_body_bytes = sinks, max_body_bytes
        self.log_lock = threading.Lock()
        self.sample_seeds = itertools.count(1)

    # -- the door: auth, body, model, schema ---------------------------------------------------
    def authorize(self, request: Request) -> None:
        """Refuse a request without the right bearer token (constant-time compare)."""
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise APIError(401, "missing bearer token: send 'Authorization: Bearer <token>'", code="invalid_api_key")
        if not hmac.compare_digest(given.strip().encode(), self.expected):
            raise APIError(401, "invalid bearer token", code="invalid_api_key")

    async def json_body(self, request: Request) -> dict[str, Any]:
        """The request body as a JSON object, within ``max_body_bytes``."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise APIError(413, f"request body over {self.max_body_bytes} bytes")
        raw = await request.body()
        if len(raw) > self.max_body_bytes:
            raise APIError(413, f"request body over {self.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"malformed JSON body: {e}") from None
        except RecursionError:
            raise APIError(400, "malformed JSON body: nested too deeply") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body

    def check_model(self, body: dict[str, Any]) -> None:
        """Refuse a body that names no model or another model than the one served."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "model: required (see /v1/models)", param="model")
        if model != self.model_name:
            raise APIError(404, f"model {model!r} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")

    @staticmethod
    def validated(kind: str, body: dict[str, Any]):
        """The `splitrl.serve.schema` request, or a 400 naming the field."""
        try:
            return validate_request(kind, body)
        except RequestError as e:
            raise APIError(400, str(e), param=e.param) from None

    # -- the prompt and the limits that depend on this server -----------------------------------
    def encode(self, text: str):
        """The prompt's token ids, ``(1, T)``; a 400 for text that cannot be tokenised or is empty."""
        try:
            ids = self.tokenizer(text, return_tensors="pt").input_ids
        except (UnicodeError, ValueError, TypeError) as e:  # (the schema already refuses lone surrogates)
            raise APIError(400, f"the prompt cannot be tokenised: {type(e).__name__}", param="prompt") from None
        if ids.shape[1] == 0:
            raise APIError(400, "the prompt encodes to zero tokens", param="prompt")
        return ids

    def chat_prompt(self, messages) -> str:
        """The prompt text of a chat: the tokenizer's template, or a plain transcript."""
        norm = [{"role": m.role, "content": m.content} for m in messages]  # validated by the schema
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(norm, add_generation_prompt=True, tokenize=False)
        # No chat template (base models): a plain transcript ending where the assistant speaks.
        return "".join(f"{m['role']}: {m['content']}\n" for m in norm) + "assistant:"

    async def prompt_ids(self, text_fn: Callable[[], str]):
        """Build and tokenise the prompt in a worker thread: a long prompt must not block the event loop."""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(lambda: self.encode(text_fn()))

    def parse(self, body, prompt_ids) -> _Request:
        """``body``: a validated `splitrl.serve.schema` request; the limits that depend on this server."""
        max_tokens = body.requested_max_tokens
        max_tokens = self.default_max_tokens if max_tokens is None else max_tokens
        if max_tokens > self.max_tokens_limit:
            raise APIError(400, f"max_tokens {max_tokens} exceeds this server's limit of {self.max_tokens_limit}",
                           param="max_tokens", code="context_length_exceeded")
        n_prompt = int(prompt_ids.shape[1])
        max_positions = self.view.max_positions
        if max_positions and n_prompt + max_tokens > max_positions:
            raise APIError(400, f"this model's maximum context length is {max_positions} tokens; the prompt has "
                           f"{n_prompt} and max_tokens is {max_tokens}", param="max_tokens",
                           code="context_length_exceeded")
        temperature = 1.0 if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else max(body.top_p, MIN_TOP_P)
        seed = next(self.sample_seeds) if body.seed is None else body.seed
        # temperature 0 (or below vLLM's epsilon) is greedy, as in the OpenAI API; otherwise sample at the head.
        sampling = (SamplingConfig() if temperature < GREEDY_BELOW else
                    SamplingConfig(do_sample=True, temperature=temperature, top_p=top_p, seed=seed))
        return _Request(prompt_ids, max_tokens, sampling, bool(body.stream), body.include_usage, body.stop_strings)

    # -- generation and the response fields ------------------------------------------------------
    def run(self, req: _Request, request_id: str, on_token: Callable[[int], None] | None = None):
        """Serve one request through the controller and log its decision record."""
        # (the backend closes its sessions, the edge's included, on every exit: a raise from on_token too)
        result, record = self.server.serve(req.prompt_ids, sampling=req.sampling, max_new_tokens=req.max_tokens,
                                           stop_at_eos=True, on_token=on_token, request_id=request_id)
        with self.log_lock:
            for sink in self.sinks:
                sink.write(record.to_dict())
        return result, record

    def finish_reason(self, token_ids: list[int], max_tokens: int, stopped: bool) -> str:
        """OpenAI's ``finish_reason``: ``stop`` (EOS or a stop string) or ``length``."""
        if stopped or (token_ids and token_ids[-1] in self.eos_ids):
            return "stop"
        return "length" if len(token_ids) >= max_tokens else "stop"

    def figures(self, record: DecisionRecord) -> dict[str, Any]:
        """The extra ``splitrl`` field for ``record``."""
        return splitrl_figures(record, self.view.num_layers)

    def chunk(self, kind: str, rid: str, created: int, piece: str | None, finish: str | None, *, first: bool = False,
              extra: dict | None = None) -> str:
        """One server-sent event in the OpenAI chunk format."""
        if kind == "chat":
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if piece is not None:
                delta["content"] = piece
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        data = {"id": rid, "object": obj, "created": created, "model": self.model_name, "choices": [choice],
                **(extra or {})}
        return f"data: {json.dumps(data)}\n\n"


def _usage(n_prompt: int, n_new: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new}


async def _respond(state: _AppState, kind: str, req: _Request):
    """The response to a validated request: one JSON object, or an event stream."""
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    n_prompt = int(req.prompt_ids.shape[1])
    if req.stream:
        return StreamingResponse(_stream(state, kind, req, rid, created, n_prompt), media_type="text/event-stream")
    result, record = await run_in_threadpool(state.run, req, rid)
    text, stopped = _truncate_at_stop(result.text, req.stop)
    reason = state.finish_reason(result.token_ids, req.max_tokens, stopped)
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
    return JSONResponse({
        "id": rid, "object": "chat.completion" if kind == "chat" else "text_completion", "created": created,
        "model": state.model_name, "choices": [choice], "usage": _usage(n_prompt, len(result.token_ids)),
        "splitrl": state.figures(record),
    })


_DONE = object()  # the generation thread's last queue item is ``(_DONE, (result, record) or the exception)``


def _start_generation(state: _AppState, req: _Request, rid: str, loop, queue: asyncio.Queue,
                      gone: threading.Event) -> None:
    """Generate in a thread that puts each token id, then ``(_DONE, outcome)``, on ``queue``."""

    def on_token(t: int) -> None:
        if gone.is_set():
            raise _Cancelled(f"request {rid}: the client disconnected")
        loop.call_soon_threadsafe(queue.put_nowait, t)

    def work() -> None:
        try:
            out = state.run(req, rid, on_token=on_token)
        except Exception as e:  # reported in the stream: the HTTP status is already sent
            out = e
        if not gone.is_set():
            loop.call_soon_threadsafe(queue.put_nowait, (_DONE, out))

    threading.Thread(target=work, name=f"serve-{rid}", daemon=True).start()


def _sendable(tokenizer, ids: list[int], stop: Sequence[str]) -> tuple[str | None, bool]:
    """The text of ``ids`` a stream may send now (None: wait for the next token), and whether a stop string hit."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if text.endswith("\ufffd"):
        return None, False  # an incomplete UTF-8 sequence: wait for the next token
    text, stopped = _truncate_at_stop(text, stop)
    if not stopped:  # hold back what could still become a stop string
        text = text[:len(text) - _held_back(text, stop)]
    return text, stopped


async def _stream(state: _AppState, kind: str, req: _Request, rid: str, created: int, n_prompt: int):
    """The server-sent events of a streamed answer; closing the generator stops the generation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()  # the client went away: stop generating at the next token
    try:
        _start_generation(state, req, rid, loop, queue, gone)
        ids: list[int] = []
        sent = ""
        stopped = False
        if kind == "chat":
            yield state.chunk(kind, rid, created, "", None, first=True)
        while True:
            item = await queue.get()
            if isinstance(item, tuple) and item and item[0] is _DONE:
                outcome = item[1]
                break
            ids.append(int(item))
            if stopped:
                continue
            text, stopped = _sendable(state.tokenizer, ids, req.stop)
            if text is not None and len(text) > len(sent):
                yield state.chunk(kind, rid, created, text[len(sent):], None)
                sent = text
        for event in _stream_end(state, kind, req, rid, created, n_prompt, outcome, sent, stopped):
            yield event
    finally:  # normal end, or the client disconnected (the generator is closed / cancelled)
        gone.set()


def _stream_end(state: _AppState, kind: str, req: _Request, rid: str, created: int, n_prompt: int, outcome,
                sent: str, stopped: bool):
    """The last events of a stream: the unsent rest, the finish reason and figures, usage, ``[DONE]``."""
    if isinstance(outcome, Exception):
        err = APIError(500, f"generation failed: {type(outcome).__name__}: {outcome}".splitlines()[0],
                       type="server_error")
        yield f"data: {json.dumps(err.body())}\n\n"
        yield "data: [DONE]\n\n"
        return
    result, record = outcome
    text, _ = _truncate_at_stop(result.text, req.stop)
    if len(text) > len(sent) and not stopped:
        yield state.chunk(kind, rid, created, text[len(sent):], None)
    reason = state.finish_reason(result.token_ids, req.max_tokens, stopped)
    yield state.chunk(kind, rid, created, None, reason, extra={"splitrl": state.figures(record)})
    if req.include_usage:
        data = {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                "created": created, "model": state.model_name, "choices": [],
                "usage": _usage(n_prompt, len(result.token_ids))}
        yield f"data: {json.dumps(data)}\n\n"
    yield "data: [DONE]\n\n"


def _add_error_handlers(app) -> None:
    """Answer `APIError`, schema errors and anything unexpected as the OpenAI error object."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(APIError)
    async def _api_error(_request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        return JSONResponse(APIError(400, f"invalid request: {exc.errors()[:1]}").body(), status_code=400)

    @app.exception_handler(Exception)
    async def _internal_error(_request, exc: Exception):  # one bad request must not take the server down
        err = APIError(500, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0], type="server_error")
        return JSONResponse(err.body(), status_code=500)


def _add_info_routes(app, state: _AppState) -> None:
    """``/health`` (no token), ``/v1/models`` and ``/v1/models/{model_id}``."""
    backend, server, model_name = state.backend, state.server, state.model_name

    @app.get("/health")
    async def health():
        out = {"status": "ok", "model": model_name, "edge_available": bool(backend.edge_available),
               "requests_served": server.requests}
        if hasattr(backend, "edge_error"):  # the remote UE client: why the edge is down (busy, mismatch, gone)
            out["edge_error"] = None if backend.edge_available else backend.edge_error
        return out

    @app.get("/v1/models")
    async def models(request: Request):
        state.authorize(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "splitrl"}]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request):
        state.authorize(request)
        if model_id != model_name:
            raise APIError(404, f"model {model_id!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        return {"id": model_name, "object": "model", "created": 0, "owned_by": "splitrl"}


def _add_completion_routes(app, state: _AppState) -> None:
    """``/v1/completions`` and ``/v1/chat/completions``."""

    async def admitted(kind: str, request: Request):
        """The validated request body of an authorised request for this server's model."""
        state.authorize(request)
        body = await state.json_body(request)
        state.check_model(body)
        return state.validated(kind, body)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await admitted("completion", request)
        return await _respond(state, "completion", state.parse(req, await state.prompt_ids(lambda: req.prompt)))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await admitted("chat", request)
        prompt_ids = await state.prompt_ids(lambda: state.chat_prompt(req.messages))
        return await _respond(state, "chat", state.parse(req, prompt_ids))


def create_app(server: RequestServer, *, token: str, model_name: str, max_tokens_limit: int = 512,
               default_max_tokens: int = 16, sinks: Sequence[Any] = (), max_body_bytes: int = 1 << 20):
    """The FastAPI app serving ``server``'s model as ``model_name`` behind bearer ``token``."""
    from fastapi import FastAPI

    if not token:
        raise UsageError("token: a non-empty bearer token is required")
    state = _AppState(server, token=token, model_name=model_name, max_tokens_limit=max_tokens_limit,
                      default_max_tokens=default_max_tokens, sinks=sinks, max_body_bytes=max_body_bytes)
    app = FastAPI(title="splitrl", description="OpenAI-compatible endpoint in front of the split controller")
    _add_error_handlers(app)
    _add_info_routes(app, state)
    _add_completion_routes(app, state)
    return app
