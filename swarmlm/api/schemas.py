"""OpenAI request bodies, validated strictly on entry, and what a generation needs from them.

Fields the official client sends are accepted with OpenAI's defaults (null means default), and
vLLM's sampling extensions too (`top_k`, `min_p`, `repetition_penalty`), and `response_format`
(JSON mode and JSON schemas, by constrained decoding: shards.constrained), and `tools` with
`tool_choice` and `parallel_tool_calls` (shards.tool_calls), whose schemas are compiled here so that
one the grammar engine cannot follow is a 400 before any work. Features this gateway cannot honour
(logit_bias, the deprecated `functions`) are refused with a 400 naming the parameter rather than
silently ignored; unknown fields are ignored, as newer clients send fields older servers do
not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shards.constrained import ResponseFormatError, json_grammar
from shards.tool_calls import ToolError, ToolSpec, tool_spec

from .errors import bad_request, unsupported

Prompt = Union[str, list[int], list[dict[str, Any]]]
MAX_STOP = 4
MAX_N = 16  # answers per request: they run one after the other, so each costs a whole generation
MAX_TOP_LOGPROBS = 20  # chat's bound; legacy completions allow 5


class _Schema(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class StreamOptions(_Schema):
    include_usage: bool | None = None


class ContentPart(_Schema):
    type: str
    text: str | None = None


class FunctionCall(_Schema):
    name: str
    arguments: str  # JSON, as the model wrote it


class ToolCall(_Schema):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(_Schema):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


# What we cannot honour, and the values that mean "not used" (which clients often send explicitly).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logit_bias": ({},), "functions": ([],),
    "function_call": ("none", "auto"), "best_of": (1,), "echo": (False,), "suffix": ("",),
}


class _Sampling(_Schema):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch's generator takes
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=MAX_N)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    top_k: int | None = Field(None, ge=-1)  # vLLM's extension: -1 or 0 means off
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    logit_bias: Any = None


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: Any = None  # checked by shards.tool_calls.tool_spec, which names the faulty part
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)  # legacy: how many alternatives per token
    best_of: Any = None
    echo: Any = None
    suffix: Any = None


@dataclass(frozen=True)
class GenerationRequest:
    """One generation, in the SDK's terms."""

    model: str
    prompt: Prompt  # text, token ids, or a conversation for the chat template
    raw: bool  # text without the chat template (/v1/completions)
    max_tokens: int | None  # None: the gateway's default, within the context
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    n: int = 1
    logprobs: int | None = None  # None: no log-probabilities; else how many alternatives per token
    response_format: dict[str, Any] | None = None  # OpenAI's, checked to compile; None: plain text
    tools: ToolSpec | None = None  # compiled; None: no tools

    def sampling(self) -> dict[str, Any]:
        """Keyword arguments for `Session.stream`; top_p 0 (allowed by OpenAI) means the likeliest token."""
        greedy = self.temperature == 0 or self.top_p == 0
        return {"temperature": 0.0 if greedy else self.temperature, "top_p": self.top_p or 1.0, "seed": self.seed,
                "stop": self.stop, "top_k": self.top_k, "min_p": self.min_p,
                "presence_penalty": self.presence_penalty, "frequency_penalty": self.frequency_penalty,
                "repetition_penalty": self.repetition_penalty, "logprobs": self.logprobs,
                "response_format": self.response_format, "tools": self.tools}


def parse(schema: type[_Sampling], body: Any) -> _Sampling:
    """Validate a decoded JSON body; the first problem becomes a 400 naming its parameter."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise bad_request(f"Invalid value for '{param}': {first['msg']}", param=param,
                          code="invalid_value") from None


def chat_request(body: Any) -> GenerationRequest:
    req = parse(ChatCompletionRequest, body)
    assert isinstance(req, ChatCompletionRequest)
    messages = [_message(m, i) for i, m in enumerate(req.messages)]
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("'top_logprobs' needs 'logprobs' set to true", param="top_logprobs")
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    try:
        response_format = req.response_format if json_grammar(req.response_format) is not None else None
    except ResponseFormatError as e:
        raise bad_request(str(e), param="response_format", code="invalid_value") from None
    try:
        tools = tool_spec(req.tools, req.tool_choice, req.parallel_tool_calls, response_format)
    except ToolError as e:
        raise bad_request(str(e), param=e.param, code="invalid_value") from None
    return _generation(req, messages, raw=False, max_tokens=req.max_completion_tokens or req.max_tokens,
                       logprobs=logprobs, response_format=response_format, tools=tools)


def completion_request(body: Any) -> GenerationRequest:
    req = parse(CompletionRequest, body)
    assert isinstance(req, CompletionRequest)
    prompt: Prompt
    if isinstance(req.prompt, str):
        prompt = req.prompt
    elif req.prompt and all(isinstance(p, int) for p in req.prompt):
        prompt = list(req.prompt)  # type: ignore[arg-type]
    elif len(req.prompt) == 1:
        prompt = req.prompt[0]  # type: ignore[assignment]
    else:
        raise bad_request("give exactly one prompt per request (batches of prompts are not supported)",
                          param="prompt")
    if not prompt:
        raise bad_request("the prompt is empty", param="prompt")
    return _generation(req, prompt, raw=True, max_tokens=req.max_tokens, logprobs=req.logprobs)


def _message(m: Message, i: int) -> dict[str, Any]:
    if m.role == "function":
        raise unsupported(f"messages[{i}]", "The deprecated 'function' role (use 'tool')")
    if m.role == "tool" and not m.tool_call_id:
        raise bad_request(f"messages[{i}]: a 'tool' message needs the 'tool_call_id' it answers",
                          param=f"messages[{i}].tool_call_id", code="invalid_value")
    if m.tool_calls and m.role != "assistant":
        raise bad_request(f"messages[{i}]: only assistant messages carry 'tool_calls'",
                          param=f"messages[{i}].tool_calls", code="invalid_value")
    if isinstance(m.content, list):
        if any(p.type != "text" or p.text is None for p in m.content):
            raise unsupported(f"messages[{i}].content", "Content other than text (images, audio, files)")
        text = "\n".join(p.text or "" for p in m.content)
    else:
        text = m.content or ""
    message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": text}
    if m.role == "tool":
        message["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        message["tool_calls"] = [c.model_dump() for c in m.tool_calls]
    return message


def _shown(value: object, limit: int = 60) -> str:
    """A value's repr cut at a word boundary with '…', so the error stays readable and bounded."""
    text = repr(value)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(",:") + " …"


def _generation(req: _Sampling, prompt: Prompt, *, raw: bool, max_tokens: int | None, logprobs: int | None,
                response_format: dict[str, Any] | None = None, tools: ToolSpec | None = None) -> GenerationRequest:
    for name, neutral in _NEUTRAL.items():
        value = getattr(req, name, None)
        if value is not None and value not in neutral:
            raise unsupported(name, f"'{name}' = {_shown(value)}")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > MAX_STOP:
        raise bad_request(f"'stop' takes at most {MAX_STOP} sequences, got {len(stop)}", param="stop")
    if req.stream_options is not None and not req.stream:
        raise bad_request("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    return GenerationRequest(
        model=req.model, prompt=prompt, raw=raw, max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed, stop=stop, stream=bool(req.stream),
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        top_k=max(0, req.top_k or 0), min_p=req.min_p or 0.0, presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty, n=req.n or 1,
        logprobs=logprobs, response_format=response_format, tools=tools)

