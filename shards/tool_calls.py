"""Tool calling: OpenAI's `tools` as a prompt and a grammar, and the model's answer as `tool_calls`.

Prompt. A chat template that renders tools (it shows a probe tool's name when given one: Qwen2.5,
Llama 3.1, SmolLM3, Hermes…) gets the tools, the assistant's earlier calls and the tool results in
Hugging Face's shape (arguments as objects). A template that does not (SmolLM2's) gets the
fallback, the Hermes format many open models were tuned on (Qwen2.5's template writes it too): the
tools' signatures in the system message, each call in the assistant's turn as
`<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`, and the tool results in a user turn as
`<tool_response>\\n…\\n</tool_response>`.

Output. Whatever the template, the answer writes calls in that Hermes format and a grammar
(llguidance's lark, each tool's schema inlined with `%json`) makes it so: `required` forces one
call (or several, one per line, with `parallel_tool_calls`) to one of the tools, a named function
forces one call to it, and arguments always validate against the tool's `parameters`. With `auto`
the model chooses at its first token between a call and text, which then must not begin with
`<tool_call>` (or the `response_format`'s JSON): one grammar `start: TEXT | calls`. `none` leaves
the tools out of the prompt and the answer free. The JSON is compact (no newline inside), so a
streaming reader knows a call's arguments ended at the first newline.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence, Union

import llguidance

from ledger import bounds
from ledger.errors import EncodingError

from .constrained import COMPACT_JSON, SCHEMA_BOUNDS, ResponseFormatError, response_schema, schema_grammar
from .errors import ShardsError

MAX_TOOLS = 128  # OpenAI's limit
# All tools together: one grammar, compiled on the caller's thread, so one schema's budget.
TOOLS_BOUNDS = bounds.Bounds(depth=SCHEMA_BOUNDS.depth + 4, items=SCHEMA_BOUNDS.items, size=SCHEMA_BOUNDS.size,
                             string=SCHEMA_BOUNDS.string)
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
CALL_OPEN, CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"
_HEAD = re.compile(r'\{"name": "([A-Za-z0-9_-]{1,64})", "arguments": ')
_PROBE = "swarmlm_probe_tool"
FALLBACK_SYSTEM = (
    "You are a function calling AI model. You may call one or more functions to assist with the user query. "
    "Here are the available tools:\n<tools>\n{tools}\n</tools>\n"
    "For each function call, return a JSON object with the function name and arguments within "
    "<tool_call></tool_call> tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n"
    "</tool_call>")


class ToolError(ShardsError):
    """`tools`, `tool_choice` or `parallel_tool_calls` that are malformed or cannot be compiled; `param` names which."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description is not None:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolSpec:
    """A request's tools, which of them the answer may or must call, and how many calls at once."""

    tools: tuple[Tool, ...]
    choice: str  # "auto", "none", "required", or the name of the tool to call
    parallel: bool

    @property
    def active(self) -> bool:
        """The answer may call a tool (so the prompt shows them)."""
        return self.choice != "none"

    def prompt_tools(self) -> list[dict[str, Any]] | None:
        """The tools for the chat template (None when the answer may not call one)."""
        return [t.to_json() for t in self.tools] if self.active else None

    def grammar(self, response_format: dict[str, Any] | None = None) -> str | None:
        """The llguidance grammar of an answer (None: free text); with `auto`, text takes the
        `response_format`'s JSON when one is given."""
        if not self.active:
            return None
        named = self.choice not in ("auto", "required")
        bodies = [_call_schema(t) for t in self.tools if not named or t.name == self.choice]
        body = bodies[0] if len(bodies) == 1 else {"anyOf": bodies}
        lines = ["%llguidance {}",
                 "calls: call" + (' ("\\n" call)*' if self.parallel and not named else ""),
                 f"call: {json.dumps(CALL_OPEN)} %json {json.dumps({**body, 'x-guidance': COMPACT_JSON})} "
                 f"{json.dumps(CALL_CLOSE)}"]
        if self.choice != "auto":
            lines.insert(1, "start: calls")
        else:
            schema = response_schema(response_format)
            lines.insert(1, "start: TEXT | calls")
            if schema is None:  # text that does not begin a call
                lines.append("TEXT: /(.|\\n)*/ & ~/<tool_call>(.|\\n)*/")
            else:
                lines[1] = "start: text | calls"
                lines.append(f"text: %json {json.dumps({**schema, 'x-guidance': COMPACT_JSON})}")
        return "\n".join(lines)


def _call_schema(tool: Tool) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["name", "arguments"], "additionalProperties": False}


def tool_spec(tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None,
              response_format: dict[str, Any] | None = None) -> ToolSpec | None:
    """OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`, validated, bounded and compiled (with the
    `response_format` the text of `auto` takes); None when there are no tools."""
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ToolError("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
    if tools is None or tools == []:
        if tool_choice not in (None, "none", "auto"):
            raise ToolError("'tool_choice' needs 'tools' to choose from", "tool_choice")
        return None
    if not isinstance(tools, list):
        raise ToolError("'tools' must be an array of {\"type\": \"function\", \"function\": {...}}", "tools")
    if len(tools) > MAX_TOOLS:
        raise ToolError(f"'tools' holds {len(tools)} tools; at most {MAX_TOOLS} are allowed", "tools")
    tools = [_plain(t) for t in tools]
    try:
        bounds.check(tools, TOOLS_BOUNDS, "'tools'")
    except EncodingError as e:
        raise ToolError(str(e), "tools") from None
    parsed = tuple(_tool(t, i) for i, t in enumerate(tools))
    names = [t.name for t in parsed]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ToolError(f"tools[{i}]: the function name {name!r} is used twice", f"tools[{i}].function.name")
    spec = ToolSpec(parsed, _choice(tool_choice, names), True if parallel_tool_calls is None else parallel_tool_calls)
    try:
        grammar = spec.grammar(response_format)
    except ResponseFormatError as e:
        raise ToolError(str(e), "response_format") from None
    if grammar is not None:
        _check_compiles(grammar, parsed)
    return spec


def _check_compiles(grammar: str, tools: Sequence[Tool]) -> None:
    """The grammar compiles, in one go (a few ms even for many tools); when it does not, the first tool
    whose schema does not compile alone is named."""
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(llguidance.grammar_from("lark", grammar))
    if not failed:
        return
    for i, tool in enumerate(tools):
        try:
            schema_grammar(tool.parameters, f"tools[{i}].function.parameters")
        except ResponseFormatError as e:
            raise ToolError(str(e), f"tools[{i}].function.parameters") from None
    raise ToolError(f"the tools cannot be compiled together: {messages[0]}", "tools")


def _plain(tool: Any) -> Any:
    """openai's `pydantic_function_tool` is a dict subclass (so is its `function`): plain dicts, as decoded JSON."""
    if not isinstance(tool, dict):
        return tool
    return {k: dict(v) if k == "function" and isinstance(v, dict) else v for k, v in tool.items()}


def _tool(value: Any, i: int) -> Tool:
    """Chat's `{"type": "function", "function": {...}}`, or the Responses API's flat `{"type": "function", "name": …}`."""
    where = f"tools[{i}]"
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(
            value.get("function", value), dict):
        raise ToolError(f"{where} must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}} "
                        "(only function tools are supported)", where)
    function = value.get("function", value)
    name = function.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ToolError(f"{where}.function.name must be 1 to 64 letters, digits, '_' or '-'", f"{where}.function.name")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise ToolError(f"{where}.function.description must be a string", f"{where}.function.description")
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise ToolError(f"{where}.function.parameters must be a JSON Schema object", f"{where}.function.parameters")
    try:
        bounds.check(parameters, SCHEMA_BOUNDS, f"{where}.function.parameters")
    except EncodingError as e:
        raise ToolError(str(e), f"{where}.function.parameters") from None
    return Tool(name, description, parameters)


def _choice(value: Any, names: list[str]) -> str:
    if value is None:
        return "auto"
    if value in ("auto", "none", "required"):
        return value
    # chat's {"type": "function", "function": {"name": …}}, or the Responses API's {"type": "function", "name": …}
    name = None
    if isinstance(value, dict) and value.get("type") == "function":
        name = value["function"].get("name") if isinstance(value.get("function"), dict) else value.get("name")
    if not isinstance(name, str):
        raise ToolError("'tool_choice' must be 'none', 'auto', 'required' or "
                        "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
    if name not in names:
        raise ToolError(f"'tool_choice' names the function {name[:64]!r}, which is not in 'tools'", "tool_choice")
    return name


# --- the conversation -------------------------------------------------------------------------------


def uses_tools(messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None) -> bool:
    return bool(tools) or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def render_chat(tokenizer: Any, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """The chat as prompt text, with tools, earlier calls and their results: the template's own way when it
    renders tools, else the fallback (module docstring)."""
    if renders_tools(tokenizer):
        return tokenizer.apply_chat_template([_native(m) for m in messages], tools=tools or None,
                                             add_generation_prompt=True, tokenize=False)
    return tokenizer.apply_chat_template(_fallback(messages, tools), add_generation_prompt=True, tokenize=False)


@lru_cache(maxsize=8)
def renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template shows the tools it is given (many ignore them silently)."""
    probe = {"type": "function", "function": {"name": _PROBE, "description": "", "parameters": {"type": "object"}}}
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=[probe],
                                             add_generation_prompt=True, tokenize=False)
    except Exception:  # a template that raises on tools does not render them
        return False
    return _PROBE in text


def _arguments(text: str) -> Any:
    """A call's arguments as an object, as templates expect (a string that is no JSON object stays a string)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _native(message: dict[str, Any]) -> dict[str, Any]:
    out = {**message, "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = [{**c, "function": {**c["function"], "arguments": _arguments(c["function"]["arguments"])}}
                             for c in message["tool_calls"]]
    return out


def call_text(name: str, arguments: Any) -> str:
    """One call as the answer writes it (the grammar's format)."""
    return CALL_OPEN + json.dumps({"name": name, "arguments": arguments}) + CALL_CLOSE


def _fallback(messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        content = m.get("content") or ""
        if m.get("role") == "tool":
            response = f"<tool_response>\n{content}\n</tool_response>"
            if i and messages[i - 1].get("role") == "tool":  # results of parallel calls share one turn
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response})
            continue
        calls = [call_text(c["function"]["name"], _arguments(c["function"]["arguments"]))
                 for c in m.get("tool_calls") or ()]
        out.append({"role": m["role"], "content": "\n".join([content] * bool(content) + calls)})
    if tools:
        listing = FALLBACK_SYSTEM.format(tools="\n".join(json.dumps(t) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + listing}
        else:
            out.insert(0, {"role": "system", "content": listing})
    return out


# --- the answer --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    text: str


@dataclass(frozen=True)
class CallBegun:
    index: int  # which call of the answer
    id: str
    name: str


@dataclass(frozen=True)
class CallArguments:
    index: int
    text: str  # the next piece of the arguments' JSON


Delta = Union[Content, CallBegun, CallArguments]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class CallReader:
    """Splits an answer's text, as it streams, into content and tool calls in the grammar's format.

    Text that may still become `<tool_call>` is held back until it does or cannot; a call's
    arguments stream as they come, but for their last character (the closing brace of the call
    object, known once the newline after it arrives).
    """

    calls: list[ToolCall] = field(default_factory=list)
    content: str = ""
    _rest: str = ""
    _state: str = "undecided"  # then "text", or a call's "head", "arguments", "close", "between"

    def push(self, text: str) -> list[Delta]:
        self._rest += text
        out: list[Delta] = []
        while True:
            state, rest = self._state, self._rest
            if state == "undecided":
                if rest.startswith(CALL_OPEN):
                    self._state, self._rest = "head", rest[len(CALL_OPEN):]
                elif CALL_OPEN.startswith(rest):
                    return out
                else:
                    self._state = "text"
            elif state == "text":
                if rest:
                    self.content += rest
                    out.append(Content(rest))
                    self._rest = ""
                return out
            elif state == "head":
                m = _HEAD.match(rest)
                if m is None:
                    return out
                self.calls.append(ToolCall("call_" + secrets.token_hex(12), m.group(1)))
                out.append(CallBegun(len(self.calls) - 1, self.calls[-1].id, m.group(1)))
                self._state, self._rest = "arguments", rest[m.end():]
            elif state == "arguments":
                end = rest.find("\n")
                piece = rest[:-1] if end < 0 else rest[:end - 1]  # hold back what may be the call's closing brace
                if piece:
                    self.calls[-1].arguments += piece
                    out.append(CallArguments(len(self.calls) - 1, piece))
                self._rest = rest[len(piece):]
                if end < 0:
                    return out
                self._state, self._rest = "close", rest[end:]
            elif state == "close":
                if not rest.startswith(CALL_CLOSE):
                    return out
                self._state, self._rest = "between", rest[len(CALL_CLOSE):]
            else:  # between calls
                if not rest.startswith("\n" + CALL_OPEN):
                    return out
                self._state, self._rest = "head", rest[len(CALL_OPEN) + 1:]

    def finish(self) -> list[Delta]:
        """The end of the answer: what was held back (a call cut short keeps its arguments so far)."""
        rest, self._rest = self._rest, ""
        if self._state == "undecided" and rest:
            self.content += rest
            return [Content(rest)]
        if self._state == "arguments" and rest:
            self.calls[-1].arguments += rest
            return [CallArguments(len(self.calls) - 1, rest)]
        return []

    def finish_reason(self, reason: str) -> str:
        """OpenAI's `tool_calls` for an answer that ended after making calls."""
        return "tool_calls" if self.calls and reason == "stop" else reason


def read_answer(text: str) -> CallReader:
    """A whole answer, read."""
    reader = CallReader()
    reader.push(text)
    reader.finish()
    return reader
