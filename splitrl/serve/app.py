"""The OpenAI-compatible HTTP API: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/health``.

`create_app` builds a FastAPI app around a `RequestServer` (policy + `GenerationBackend`), so the
same app serves the in-process `LocalBackend` (tests, ``--local``) and the remote UE client.
Each request: the controller picks the split from the observed channel, the backend generates,
and the response carries the OpenAI fields (``choices``, ``usage``) plus splitrl's own figures in
an extra ``splitrl`` field (split, SNR, emulated TTFT/energy, fallback); the same record goes to
the decision-log sinks. Streaming uses server-sent events in the OpenAI chunk format.

Every ``/v1`` route needs ``Authorization: Bearer <token>`` (compared in constant time). Bad
requests (missing/invalid token, malformed JSON, unknown model, too many tokens, bad sampling
values) get the OpenAI error object ``{"error": {"message", "type", "param", "code"}}`` and a
4xx status; the server keeps serving.
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


def create_app(server: RequestServer, *, token: str, model_name: str, max_tokens_limit: int = 512,
               default_max_tokens: int = 16, sinks: Sequence[Any] = (), max_body_bytes: int = 1 << 20):
    """The FastAPI app serving ``server``'s model as ``model_name`` behind bearer ``token``."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    if not token:
        raise ValueError("token: a non-empty bearer token is required")
    backend = server.backend
    tokenizer, view = backend.tokenizer, backend.view
    eos = getattr(view.config, "eos_token_id", None)
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) if eos is not None else set()
    expected = token.encode()
    log_lock = threading.Lock()
    sample_seeds = itertools.count(1)
    app = FastAPI(title="splitrl", description="OpenAI-compatible endpoint in front of the split controller")

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

    def authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise APIError(401, "missing bearer token: send 'Authorization: Bearer <token>'", code="invalid_api_key")
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise APIError(401, "invalid bearer token", code="invalid_api_key")

    async def json_body(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise APIError(413, f"request body over {max_body_bytes} bytes")
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise APIError(413, f"request body over {max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"malformed JSON body: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body

    def check_model(body: dict[str, Any]) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "model: required (see /v1/models)", param="model")
        if model != model_name:
            raise APIError(404, f"model {model!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")

    def encode(text: str):
        ids = tokenizer(text, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise APIError(400, "the prompt encodes to zero tokens", param="prompt")
        return ids

    def parse(body: dict[str, Any], prompt_ids) -> _Request:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = default_max_tokens if max_tokens is None else max_tokens
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise APIError(400, "max_tokens must be an integer >= 1", param="max_tokens")
        if max_tokens > max_tokens_limit:
            raise APIError(400, f"max_tokens {max_tokens} exceeds this server's limit of {max_tokens_limit}",
                           param="max_tokens", code="context_length_exceeded")
        n_prompt = int(prompt_ids.shape[1])
        if view.max_positions and n_prompt + max_tokens > view.max_positions:
            raise APIError(400, f"this model's maximum context length is {view.max_positions} tokens; the prompt has "
                           f"{n_prompt} and max_tokens is {max_tokens}", param="max_tokens",
                           code="context_length_exceeded")
        if body.get("n", 1) != 1:
            raise APIError(400, "n: only 1 choice per request is supported", param="n")
        if body.get("echo") or body.get("logprobs") not in (None, False) or body.get("best_of", 1) != 1:
            raise APIError(400, "echo, logprobs and best_of are not supported", param="logprobs")
        temperature, top_p, seed = body.get("temperature"), body.get("top_p", 1.0), body.get("seed")
        try:
            temperature = 1.0 if temperature is None else float(temperature)
            top_p = 1.0 if top_p is None else float(top_p)
            seed = next(sample_seeds) if seed is None else int(seed)
            if temperature < 0:
                raise ValueError(f"temperature must be >= 0, got {temperature}")
            # temperature 0 is greedy (as in the OpenAI API); otherwise sample on the head's side.
            sampling = (SamplingConfig() if temperature == 0 else
                        SamplingConfig(do_sample=True, temperature=temperature, top_p=top_p, seed=seed))
        except (TypeError, ValueError) as e:
            raise APIError(400, f"sampling: {e}", param="temperature") from None
        stop = body.get("stop")
        stop = [stop] if isinstance(stop, str) else list(stop or [])
        if not all(isinstance(s, str) for s in stop) or len(stop) > 4:
            raise APIError(400, "stop must be a string or a list of up to 4 strings", param="stop")
        stream = bool(body.get("stream", False))
        opts = body.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
        return _Request(prompt_ids, max_tokens, sampling, stream, include_usage, stop)

    def log(record: DecisionRecord) -> None:
        with log_lock:
            for sink in sinks:
                sink.write(record.to_dict())

    def run(req: _Request, request_id: str, on_token: Callable[[int], None] | None = None):
        result, record = server.serve(req.prompt_ids, sampling=req.sampling, max_new_tokens=req.max_tokens,
                                      stop_at_eos=True, on_token=on_token, request_id=request_id)
        log(record)
        return result, record

    def finish_reason(token_ids: list[int], max_tokens: int, stopped: bool) -> str:
        if stopped or (token_ids and token_ids[-1] in eos_ids):
            return "stop"
        return "length" if len(token_ids) >= max_tokens else "stop"

    def usage(n_prompt: int, n_new: int) -> dict[str, int]:
        return {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new}

    def chunk(kind: str, rid: str, created: int, piece: str | None, finish: str | None, *, first: bool = False,
              extra: dict | None = None) -> str:
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
        data = {"id": rid, "object": obj, "created": created, "model": model_name, "choices": [choice], **(extra or {})}
        return f"data: {json.dumps(data)}\n\n"

    async def respond(kind: str, req: _Request):
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        n_prompt = int(req.prompt_ids.shape[1])
        if not req.stream:
            result, record = await run_in_threadpool(run, req, rid)
            text, stopped = _truncate_at_stop(result.text, req.stop)
            reason = finish_reason(result.token_ids, req.max_tokens, stopped)
            if kind == "chat":
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                          "finish_reason": reason}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
            return JSONResponse({
                "id": rid, "object": "chat.completion" if kind == "chat" else "text_completion", "created": created,
                "model": model_name, "choices": [choice], "usage": usage(n_prompt, len(result.token_ids)),
                "splitrl": splitrl_figures(record, view.num_layers),
            })
        return StreamingResponse(stream(kind, req, rid, created, n_prompt), media_type="text/event-stream")

    async def stream(kind: str, req: _Request, rid: str, created: int, n_prompt: int):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def work() -> None:
            try:
                out = run(req, rid, on_token=lambda t: loop.call_soon_threadsafe(queue.put_nowait, t))
            except Exception as e:  # reported in the stream: the HTTP status is already sent
                out = e
            loop.call_soon_threadsafe(queue.put_nowait, (done, out))

        threading.Thread(target=work, name=f"serve-{rid}", daemon=True).start()
        ids: list[int] = []
        sent = ""
        stopped = False
        if kind == "chat":
            yield chunk(kind, rid, created, "", None, first=True)
        while True:
            item = await queue.get()
            if isinstance(item, tuple) and item and item[0] is done:
                outcome = item[1]
                break
            ids.append(int(item))
            if stopped:
                continue
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 sequence: wait for the next token
            text, stopped = _truncate_at_stop(text, req.stop)
            if len(text) > len(sent):
                yield chunk(kind, rid, created, text[len(sent):], None)
                sent = text
        if isinstance(outcome, Exception):
            err = APIError(500, f"generation failed: {type(outcome).__name__}: {outcome}".splitlines()[0],
                           type="server_error")
            yield f"data: {json.dumps(err.body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        result, record = outcome
        text, _ = _truncate_at_stop(result.text, req.stop)
        if len(text) > len(sent) and not stopped:
            yield chunk(kind, rid, created, text[len(sent):], None)
        reason = finish_reason(result.token_ids, req.max_tokens, stopped)
        yield chunk(kind, rid, created, None, reason, extra={"splitrl": splitrl_figures(record, view.num_layers)})
        if req.include_usage:
            data = {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                    "created": created, "model": model_name, "choices": [],
                    "usage": usage(n_prompt, len(result.token_ids))}
            yield f"data: {json.dumps(data)}\n\n"
        yield "data: [DONE]\n\n"

    def chat_prompt(messages: Any) -> str:
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "messages: a non-empty list of {role, content} objects is required", param="messages")
        norm = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise APIError(400, f"messages[{i}]: an object with a role is required", param="messages")
            content = m.get("content")
            if isinstance(content, list):  # content parts: only text is supported
                if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                    raise APIError(400, f"messages[{i}].content: only text parts are supported", param="messages")
                content = "".join(str(p.get("text", "")) for p in content)
            if content is None:
                content = ""
            if not isinstance(content, str):
                raise APIError(400, f"messages[{i}].content must be a string or text parts", param="messages")
            norm.append({"role": m["role"], "content": content})
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(norm, add_generation_prompt=True, tokenize=False)
        # No chat template (base models): a plain transcript ending where the assistant speaks.
        return "".join(f"{m['role']}: {m['content']}\n" for m in norm) + "assistant:"

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "edge_available": bool(backend.edge_available),
                "requests_served": server.requests}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "splitrl"}]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request):
        authorize(request)
        if model_id != model_name:
            raise APIError(404, f"model {model_id!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        return {"id": model_name, "object": "model", "created": 0, "owned_by": "splitrl"}

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        body = await json_body(request)
        check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise APIError(400, "prompt: a non-empty string is required (one prompt per request)", param="prompt")
        return await respond("completion", parse(body, encode(prompt)))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = await json_body(request)
        check_model(body)
        return await respond("chat", parse(body, encode(chat_prompt(body.get("messages")))))

    return app
