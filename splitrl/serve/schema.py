"""Request bodies of the OpenAI-compatible API, validated at the door (pydantic).

Everything a request can carry is checked here, before it reaches the controller, the tokenizer
or the wire to an edge: a value outside what the system supports is a 400 in the OpenAI error
shape naming the field and what is allowed, never a 500 from deeper down (the edge's wire encoder
accepts seeds in ``0..2**63-1``, temperatures in ``[1e-6, 1e6]`` and ``top_p`` in ``[1e-9, 1]``).
The ranges are OpenAI's where OpenAI has one (temperature ``[0, 2]``, top_p ``(0, 1]``, up to four
stop strings), with vLLM's conventions at the edges: a temperature below `GREEDY_BELOW` decodes
greedily, and a ``top_p`` below `MIN_TOP_P` keeps only the most likely token, as `MIN_TOP_P` does.
Strings must be valid Unicode (a lone surrogate such as ``"\\ud800"`` cannot be tokenised). Fields
OpenAI defines that this server ignores (``user``, penalties, ...) are accepted and ignored.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from splitrl.errors import UsageError

__all__ = [
    "ChatCompletionRequest", "CompletionRequest", "GREEDY_BELOW", "MAX_SEED", "MIN_TOP_P", "RequestError",
    "validate_request",
]

MAX_SEED = 2**63 - 1
GREEDY_BELOW = 1e-5   # vLLM's sampling epsilon: a smaller temperature is greedy decoding
MIN_TOP_P = 1e-9      # the wire's smallest top_p; smaller values select the same single token
MAX_STOP = 4


class RequestError(ValueError):
    """A request body that fails validation: ``param`` is the offending top-level field."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def _unicode(field: str, text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"{field} must be valid Unicode text; position {e.start} holds a lone surrogate "
                         f"{text[e.start]!r}") from None
    return text


def _number(field: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UsageError(f"{field} must be a number, got {type(v).__name__}")
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise UsageError(f"{field} must be a finite number, got {v!r:.40}")
    return x


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: Optional[Any] = None
    max_completion_tokens: Optional[Any] = None
    temperature: Optional[Any] = None
    top_p: Optional[Any] = None
    seed: Optional[Any] = None
    stop: Optional[Any] = None
    stream: Optional[Any] = None
    stream_options: Optional[Any] = None
    n: Optional[Any] = None
    echo: Optional[Any] = None
    logprobs: Optional[Any] = None
    best_of: Optional[Any] = None

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _max_tokens(cls, v: Any) -> Optional[int]:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UsageError(f"max_tokens must be an integer >= 1, got {v!r:.40}")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: Any) -> Optional[float]:
        if v is None:
            return None
        t = _number("temperature", v)
        if not 0 <= t <= 2:
            raise UsageError(f"temperature must be in [0, 2] (0 = greedy), got {v!r:.40}")
        return t

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v: Any) -> Optional[float]:
        if v is None:
            return None
        p = _number("top_p", v)
        if not 0 < p <= 1:
            raise UsageError(f"top_p must be in (0, 1], got {v!r:.40}")
        return p

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: Any) -> Optional[int]:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
            raise UsageError(f"seed must be an integer in 0..{MAX_SEED} (2**63-1), got {str(v)[:40]}")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: Any) -> list[str]:
        if v is None:
            return []
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or len(items) > MAX_STOP or not all(isinstance(s, str) for s in items):
            raise UsageError(f"stop must be a string or a list of up to {MAX_STOP} strings, got {v!r:.60}")
        return [_unicode("stop", s) for s in items]

    @field_validator("stream", "echo")
    @classmethod
    def _bool(cls, v: Any, info) -> Optional[bool]:
        if v is not None and not isinstance(v, bool):
            raise UsageError(f"{info.field_name} must be true or false, got {v!r:.40}")
        return v

    @field_validator("stream_options")
    @classmethod
    def _stream_options(cls, v: Any) -> dict:
        if v is None:
            return {}
        if not isinstance(v, dict) or not isinstance(v.get("include_usage", False), bool):
            raise UsageError("stream_options must be an object like {\"include_usage\": true}")
        return v

    @field_validator("n", "best_of")
    @classmethod
    def _one(cls, v: Any, info) -> Optional[int]:
        if v is not None and v != 1:
            raise UsageError(f"{info.field_name}: only 1 choice per request is supported, got {v!r:.40}")
        return v

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, v: Any) -> Any:
        if v not in (None, False):
            raise UsageError("logprobs is not supported")
        return v

    @model_validator(mode="after")
    def _no_echo(self) -> "_Base":
        if self.echo:
            raise UsageError("echo is not supported")
        return self

    # -- what the app uses ----------------------------------------------------------------
    @property
    def requested_max_tokens(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stop_strings(self) -> list[str]:
        return list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Base):
    """``POST /v1/completions``: one prompt (a string, or a list holding one string)."""

    prompt: Any = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> str:
        if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str):
            v = v[0]
        if not isinstance(v, str) or not v:
            raise UsageError("prompt: a non-empty string is required (one prompt per request)")
        return _unicode("prompt", v)

    @model_validator(mode="before")
    @classmethod
    def _needs_prompt(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("prompt") is None:
            raise UsageError("prompt: a non-empty string is required (one prompt per request)")
        return data


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Any = None
    content: Any = None

    @field_validator("role")
    @classmethod
    def _role(cls, v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise UsageError("an object with a role is required")
        return _unicode("role", v)

    @field_validator("content")
    @classmethod
    def _content(cls, v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, list):  # content parts: only text is supported
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text", ""), str)
                       for p in v):
                raise UsageError("content: only text parts are supported")
            v = "".join(p.get("text", "") for p in v)
        if not isinstance(v, str):
            raise UsageError("content must be a string or text parts")
        return _unicode("content", v)

    @model_validator(mode="before")
    @classmethod
    def _object(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "role" not in data:
            raise UsageError("an object with a role is required")
        return data


class ChatCompletionRequest(_Base):
    """``POST /v1/chat/completions``: a non-empty list of ``{role, content}`` messages."""

    messages: list[ChatMessage] = []

    @model_validator(mode="before")
    @classmethod
    def _needs_messages(cls, data: Any) -> Any:
        if isinstance(data, dict):
            m = data.get("messages")
            if not isinstance(m, list) or not m:
                raise UsageError("messages: a non-empty list of {role, content} objects is required")
        return data


Kind = Literal["completion", "chat"]


def validate_request(kind: Kind, body: dict) -> Union[CompletionRequest, ChatCompletionRequest]:
    """The validated request, or `RequestError` with one line naming the field and what is allowed."""
    cls = ChatCompletionRequest if kind == "chat" else CompletionRequest
    try:
        return cls.model_validate(body)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = [str(x) for x in err.get("loc", ())]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        param = loc[0] if loc else msg.split(":", 1)[0].split(" ", 1)[0]
        if param not in cls.model_fields:
            param = None
        if loc:  # name the full path: messages.0.content must be ...
            path = ".".join(loc)
            msg = path + msg[len(loc[-1]):] if msg.startswith(loc[-1]) else f"{path}: {msg}"
        raise RequestError(msg, param) from None
