"""Generation over any block runner: local blocks or a chain of remote nodes share this loop.

A `Session` keeps the token history its runner's caches hold. Each call sends only what the
caches lack (the new suffix after the longest common prefix), so a multi-turn chat re-sends
nothing it already sent. A chat session also keeps the conversation: a call may pass only the new
message (the session adds it and its answer to the chat) or the whole chat so far.

With speculation (`speculative=k`), a trip sends the last token plus up to k drafted tokens as one
step and judges all of them from that one forward (shards.speculative); the history is cut back to
the verified tokens, so the next step starts below what the caches hold and overwrites the rest.

With `response_format` (shards.constrained), a grammar masks each position's logits before a
token is chosen, drafts included, so JSON answers always parse and follow their schema. With
`tools` (shards.tool_calls) the prompt shows them and a grammar shapes the calls, whose arguments
follow each tool's schema; the answer's calls land in `Generation.tool_calls`.

The generation loop is written once, free of I/O (`_Core`): it yields a `Forward` whenever it needs
the blocks run and is sent their output. A `Forward` also names the tokens it embeds and how the
next token will be chosen, which a runner that samples ahead (a ring: routing/ring.py) checks
against; other runners see only `forward(hidden, start)`. The synchronous API (`stream`, `generate`, …) drives it with
the runner's blocking `forward`; the asyncio API (`astream`, `agenerate`, …) runs the loop's torch
work (embeddings, LM head, masks, sampling) on a worker thread and awaits the runner's `aforward` on
the event loop, which a remote runner serves without a thread of its own.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing, closing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Generator, Iterator, Protocol, Sequence, Union, runtime_checkable

import torch

from .constrained import JsonConstraint, json_grammar
from .drafting import Draft, Drafter, PromptLookupDrafter
from .errors import ShardsError
from .head import Head
from .logits_processing import TokenLogprob, token_logprobs
from .sampling import Sampler, SamplingParams
from .served import ServedBy
from .speculative import AdaptiveDraftLength, FixedDraftLength, accept_greedy, accept_sampled
from .tool_calls import ToolSpec, read_answer, render_chat, tool_spec, uses_tools

Message = dict[str, Any]  # OpenAI's: role and content, and tool_calls or tool_call_id where tools are used
Prompt = Union[str, Sequence[int], Sequence[Message]]


class BlockRunner(Protocol):
    """Runs all blocks of the model for one session, keeping their KV caches."""

    def forward(self, hidden: torch.Tensor, start: int) -> torch.Tensor: ...

    async def aforward(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        """`forward` for a caller on an event loop, which it never blocks."""

    def close(self, length: int | None = None) -> None:
        """End the session; `length` is how many positions the caller kept (speculation rolls back)."""

    async def aclose(self, length: int | None = None) -> None: ...

    def served(self) -> ServedBy | None:
        """Which nodes serve (or served) this session; None for blocks in this process."""


@dataclass
class TokenEvent:
    token_id: int | None  # None for the final flush of text held back at the end
    text: str  # the text this token completes (may be empty while a character is incomplete)
    logprob: TokenLogprob | None = None  # when asked for (`logprobs=`)


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or a stop string), "length", or "tool_calls" (the answer called tools)
    prompt_tokens: int
    time_to_first_token: float = 0.0
    total_time: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    logprobs: list[TokenLogprob] | None = None  # one per token id, when asked for (`logprobs=`)
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's shape, when `tools` were given and the answer called some
    served: ServedBy | None = None  # the session and chain of nodes that computed it (None when local)

    @property
    def tokens_per_second(self) -> float:
        return len(self.token_ids) / self.total_time if self.total_time else 0.0


@dataclass(frozen=True)
class Forward:
    """The generation loop's request: run the blocks on `hidden`, entering at position `start`.

    `ids` are the tokens `hidden` embeds, `context` every token through them (the text so far). When
    the loop will choose the token after this step with `sampler` alone (no grammar, no speculation
    but the runner's own), `sampler` is given, with `remaining`, how many tokens it may still choose in
    this call (this step's next included), and `stop`, the ids that end it. With speculation drafted
    by the runner (`SamplingRunner.drafter`: a ring's sampler drafts), `max_draft` is the most drafts a
    trip takes, and the last `drafted` of `ids` are drafts."""

    hidden: torch.Tensor
    start: int
    ids: tuple[int, ...] = ()
    sampler: Sampler | None = None
    remaining: int = 0
    stop: frozenset[int] = frozenset()
    context: tuple[int, ...] = ()
    drafted: int = 0
    max_draft: int = 0


@runtime_checkable
class SamplingRunner(BlockRunner, Protocol):
    """A runner that is told each step's tokens and sampler (a ring samples the next tokens itself)."""

    def forward_step(self, step: Forward) -> torch.Tensor: ...

    async def aforward_step(self, step: Forward) -> torch.Tensor: ...

    def drafter(self) -> Drafter | None:
        """Who drafts for speculation on this runner (a ring: what its sampler drafted), if anyone."""


_Core = Generator[Union[TokenEvent, Forward], Any, None]  # is sent the blocks' output after each Forward


def encode_prompt(tokenizer: Any, prompt: Prompt, raw: bool = False, vocab_size: int | None = None,
                  tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids for a prompt: ids pass through (each must be below `vocab_size`, when given);
    text and conversations use the chat template, with `tools` (OpenAI's) where given."""
    if isinstance(prompt, str):
        if raw or not getattr(tokenizer, "chat_template", None):
            return list(tokenizer(prompt)["input_ids"])
        prompt = [{"role": "user", "content": prompt}]
    prompt = list(prompt)
    if prompt and all(isinstance(t, int) for t in prompt):
        if vocab_size is not None and any(not 0 <= t < vocab_size for t in prompt):
            raise ShardsError(f"token ids must be in [0, {vocab_size})")
        return [int(t) for t in prompt]
    if tokenizer is None:
        raise ShardsError("this model has no tokenizer: pass token ids")
    if not getattr(tokenizer, "chat_template", None):
        raise ShardsError("the tokenizer has no chat template: pass a plain string with raw=True")
    if uses_tools(prompt, tools):  # type: ignore[arg-type]
        text = render_chat(tokenizer, prompt, tools)  # type: ignore[arg-type]
    else:
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class Session:
    """One conversation's state on a runner: the ids its caches hold, and generation over them.

    `speculative` (the most drafts per trip; 0 = off) and `drafter` are defaults for its calls;
    `details` adds facts about the runner (which nodes serve it) to each Generation's `extra`.
    """

    def __init__(self, head: Head, tokenizer: Any, runner: BlockRunner, max_length: int, eos_ids: set[int], *,
                 speculative: int = 0, drafter: Drafter | None = None,
                 details: Callable[[BlockRunner], dict[str, Any]] | None = None) -> None:
        self.head, self.tokenizer, self.runner = head, tokenizer, runner
        self.max_length, self.eos_ids = max_length, eos_ids
        self.speculative, self.drafter, self.details = speculative, drafter, details
        self.history: list[int] = []
        self.conversation: list[Message] = []  # the chat so far, its answers included
        self.draft_length: AdaptiveDraftLength | None = None  # kept across calls: it learns the runner's costs

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        self.runner.close(len(self.history))

    async def aclose(self) -> None:
        await self.runner.aclose(len(self.history))

    @property
    def served(self) -> ServedBy | None:
        """The session id and the chain of nodes serving it (None when the blocks are local)."""
        return self.runner.served()

    def describe(self, result: Generation) -> None:
        """Name who computed `result`: `served`, and the same facts in `extra` (session, chain, failovers)."""
        result.served = self.runner.served()
        if self.details is not None:
            result.extra.update(self.details(self.runner))

    def feed(self, ids: list[int]) -> torch.Tensor:
        """Bring the caches to `ids` and return the logits after its last token."""
        return self.advance(ids, 1)[0][0]

    def advance(self, ids: list[int], n: int) -> tuple[torch.Tensor, int]:
        """Bring the caches to `ids`; return the logits (n, vocab) after each of its last `n` tokens,
        and how many positions the runner computed (a step below the tokens held rewinds them)."""
        steps = self._advancing(ids, n)
        with torch.inference_mode():
            try:
                step = next(steps)
                while True:
                    step = steps.send(self._blocks(step))
            except StopIteration as done:
                return done.value

    def _blocks(self, step: Forward) -> torch.Tensor:
        """The blocks' output for `step`, computed by the runner."""
        if isinstance(self.runner, SamplingRunner):
            return self.runner.forward_step(step)
        return self.runner.forward(step.hidden, step.start)

    async def _ablocks(self, step: Forward) -> torch.Tensor:
        if isinstance(self.runner, SamplingRunner):
            return await self.runner.aforward_step(step)
        return await self.runner.aforward(step.hidden, step.start)

    def _advancing(self, ids: list[int], n: int, sampler: Sampler | None = None, remaining: int = 0,
                   stop: frozenset[int] = frozenset(), drafted: int = 0, max_draft: int = 0
                   ) -> Generator[Forward, torch.Tensor, tuple[torch.Tensor, int]]:
        """`advance`, asking its driver for the blocks' output (`sampler`, `remaining`, `stop`, `drafted`,
        `max_draft`: see Forward)."""
        common = 0
        for a, b in zip(self.history, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - n)  # the last n tokens must run to produce their logits
        hidden = self.head.embed(torch.tensor([ids[common:]], device=self.head.embed_tokens.weight.device))
        out = yield Forward(hidden, common, tuple(ids[common:]), sampler, remaining, stop, tuple(ids), drafted,
                            max_draft)
        self.history = list(ids)
        return self.head.logits(out[0, -n:]), len(ids) - common

    def stream(self, prompt: Prompt, max_new_tokens: int = 64, **kwargs: Any) -> Iterator[TokenEvent]:
        """Yield tokens as they are produced; the last event may carry only held-back text.

        Keyword options: SamplingParams fields (temperature, top_p, top_k, min_p, seed, presence_penalty,
        frequency_penalty, repetition_penalty; the default is greedy); `stop` strings; `raw` (no chat
        template); `ignore_eos`; `logprobs`: None for none, else each token's log-probability under the
        model and that many likeliest alternatives (`TokenEvent.logprob`); `speculative`: draft up to
        that many tokens per trip and verify them in one forward (None: the session's default);
        `drafter`: who drafts (default: prompt lookup); `response_format`: OpenAI's `{"type": "json_object"}`
        or `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}` constrains the answer
        to JSON (shards.constrained), which ends when the value does; `tools` (OpenAI's function tools),
        `tool_choice` ("auto" by default, "none", "required" or {"type": "function", "function": {"name": …}})
        and `parallel_tool_calls` (default True) let the answer call tools (shards.tool_calls). Every
        sampling feature works with speculation: penalties and the grammar apply at each drafted position
        for the context it follows.
        """
        yield from self._blocking(self._call(prompt, max_new_tokens, Generation("", [], "length", 0), **kwargs))

    async def astream(self, prompt: Prompt, max_new_tokens: int = 64, **kwargs: Any) -> AsyncIterator[TokenEvent]:
        """`stream` on an event loop, which it never blocks (options as for `stream`)."""
        core = self._call(prompt, max_new_tokens, Generation("", [], "length", 0), **kwargs)
        async with aclosing(self._awaiting(core)) as events:  # a reader that stops early closes the loop now
            async for event in events:
                yield event

    async def agenerate(self, prompt: Prompt, max_new_tokens: int = 64, **kwargs: Any) -> Generation:
        """`generate` on an event loop, which it never blocks."""
        result = Generation("", [], "length", 0)
        async for _ in self._awaiting(self._call(prompt, max_new_tokens, result, **kwargs)):
            pass
        return result

    def generate(self, prompt: Prompt, max_new_tokens: int = 64, **kwargs: Any) -> Generation:
        """Generate up to `max_new_tokens` (exactly that many with `ignore_eos`, as benchmarks need);
        options as for `stream`.

        With speculation, `extra["speculation"]` counts trips, drafted and accepted tokens.
        """
        result = Generation("", [], "length", 0)
        for _ in self._blocking(self._call(prompt, max_new_tokens, result, **kwargs)):
            pass
        return result

    def _blocking(self, core: _Core) -> Iterator[TokenEvent]:
        """Drive the generation loop here, the blocks through the runner's blocking `forward`."""
        with closing(core):
            sent = None
            while True:
                with torch.inference_mode():
                    try:
                        step = core.send(sent)
                    except StopIteration:
                        return
                    sent = self._blocks(step) if isinstance(step, Forward) else None
                if isinstance(step, TokenEvent):
                    yield step

    async def _awaiting(self, core: _Core) -> AsyncIterator[TokenEvent]:
        """Drive the generation loop from an event loop: its torch work on a worker thread, once per trip
        through the blocks (the tokens a step yields come back with its next forward), and the blocks
        awaited through the runner's `aforward`."""
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[list[TokenEvent | Forward]] | None = None
        try:
            sent = None
            while True:
                pending = loop.run_in_executor(None, _until_forward, core, sent)
                steps = await asyncio.shield(pending)  # cancelled, the thread still finishes its step
                for step in steps:
                    if isinstance(step, TokenEvent):
                        yield step
                if not steps or not isinstance(steps[-1], Forward):
                    return
                sent = await self._ablocks(steps[-1])
        finally:
            if pending is not None and not pending.done():
                await asyncio.wait({pending})
            core.close()  # the answer so far joins the conversation

    def stream_choices(self, prompt: Prompt, n: int, max_new_tokens: int = 64, *, raw: bool = False,
                       **kwargs: Any) -> Iterator[tuple[int, TokenEvent]]:
        """`n` answers to one prompt as (choice index, event), one answer after the other in this session.

        They share the prompt's prefill: each later answer rewinds the caches to the prompt and
        recomputes only its last token. They are not batched (n answers take n times as long). With a
        `seed`, answer i uses seed + i, so they differ and each is repeatable. The session's
        conversation keeps none of them. Options as for `stream`.
        """
        ids = self._choices_prompt(prompt, n, raw, kwargs)
        for i in range(n):
            for event in self.stream(ids, max_new_tokens, **_choice_options(kwargs, i)):
                yield i, event

    async def astream_choices(self, prompt: Prompt, n: int, max_new_tokens: int = 64, *, raw: bool = False,
                              **kwargs: Any) -> AsyncIterator[tuple[int, TokenEvent]]:
        """`stream_choices` on an event loop, which it never blocks."""
        ids = await asyncio.to_thread(self._choices_prompt, prompt, n, raw, kwargs)  # tokenizer, tools' grammars
        for i in range(n):
            async with aclosing(self.astream(ids, max_new_tokens, **_choice_options(kwargs, i))) as events:
                async for event in events:
                    yield i, event

    def choices(self, prompt: Prompt, n: int, max_new_tokens: int = 64, *, raw: bool = False,
                **kwargs: Any) -> list[Generation]:
        """`n` answers to one prompt (see `stream_choices`)."""
        ids = self._choices_prompt(prompt, n, raw, kwargs)
        return [self.generate(ids, max_new_tokens, **_choice_options(kwargs, i)) for i in range(n)]

    def _choices_prompt(self, prompt: Prompt, n: int, raw: bool, options: dict[str, Any]) -> list[int]:
        """The prompt's ids; `options` get the tools compiled once for all answers."""
        if n < 1:
            raise ShardsError(f"n (the number of answers) must be >= 1, got {n}")
        spec = _tools(options)
        options["tools"] = spec
        chat = self._chat(prompt, raw)
        return encode_prompt(self.tokenizer, prompt if chat is None else chat, raw,
                             self.head.embed_tokens.num_embeddings, spec and spec.prompt_tools())

    def _call(self, prompt: Prompt, max_new_tokens: int, result: Generation, *, stop: Sequence[str] = (),
              raw: bool = False, ignore_eos: bool = False, logprobs: int | None = None,
              speculative: int | None = None, drafter: Drafter | None = None,
              response_format: dict[str, Any] | None = None, tools: Sequence[dict[str, Any]] | ToolSpec | None = None,
              tool_choice: Any = None, parallel_tool_calls: bool | None = None,
              **sampling: Any) -> _Core:
        if logprobs is not None and logprobs < 0:
            raise ShardsError(f"logprobs (alternatives per token) must be >= 0, got {logprobs}")
        params = SamplingParams(**sampling)
        spec = _tools({"tools": tools, "tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls,
                       "response_format": response_format})
        grammar = spec.grammar(response_format) if spec is not None and spec.active else json_grammar(response_format)
        constraint = None if grammar is None else JsonConstraint(
            grammar, self.tokenizer, self.head.embed_tokens.num_embeddings, sorted(self.eos_ids))
        yield from self._run(prompt, max_new_tokens, params, stop, raw, ignore_eos, logprobs, result,
                             self._speculation(speculative, drafter, seeded=params.seed is not None), constraint, spec)

    def _speculation(self, speculative: int | None, drafter: Drafter | None, seeded: bool) -> _Speculation | None:
        """Drafts per trip adapt to measured costs, except for a seeded call: how many drafts a trip
        takes decides which random numbers it draws, so a seed repeats its answer only at a fixed k."""
        max_draft = self.speculative if speculative is None else speculative
        if max_draft < 0:
            raise ShardsError(f"speculative (the most drafts per trip) must be >= 0, got {max_draft}")
        if max_draft == 0:
            return None
        own = self.runner.drafter() if isinstance(self.runner, SamplingRunner) else None
        if drafter is None and self.drafter is None and own is not None:  # it drafts; we follow its drafts
            return _Speculation(own, FixedDraftLength(max_draft), by_runner=True)
        drafter = drafter or self.drafter or PromptLookupDrafter()
        if seeded:
            return _Speculation(drafter, FixedDraftLength(max_draft))
        if self.draft_length is None or self.draft_length.max_draft != max_draft:
            self.draft_length = AdaptiveDraftLength(max_draft)
        return _Speculation(drafter, self.draft_length)

    def _chat(self, prompt: Prompt, raw: bool) -> list[Message] | None:
        """The whole chat this call continues, or None when the prompt is no chat (raw text, token ids).

        Messages that begin with the session's conversation are the whole chat re-sent; any others
        (or a plain string: one user message) are the next turn, after the conversation so far.
        """
        if raw or not getattr(self.tokenizer, "chat_template", None):
            return None
        if isinstance(prompt, str):
            turn: list[Message] = [{"role": "user", "content": prompt}]
        else:
            turn = list(prompt)  # type: ignore[arg-type]
            if not turn or not all(isinstance(m, dict) for m in turn):
                return None
        known = self.conversation
        return turn if turn[:len(known)] == known else [*known, *turn]

    def _run(self, prompt: Prompt, max_new_tokens: int, params: SamplingParams, stop: Sequence[str], raw: bool,
             ignore_eos: bool, logprobs: int | None, result: Generation,
             speculation: _Speculation | None, constraint: JsonConstraint | None,
             spec: ToolSpec | None) -> _Core:
        if max_new_tokens < 1:
            raise ShardsError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        chat = self._chat(prompt, raw)
        ids = encode_prompt(self.tokenizer, prompt if chat is None else chat, raw,
                            self.head.embed_tokens.num_embeddings, spec and spec.prompt_tools())
        if not ids:
            raise ShardsError("the prompt is empty")
        result.prompt_tokens = len(ids)
        sampler = Sampler(params, len(ids))
        started = time.perf_counter()
        try:
            yield from self._tokens(ids, max_new_tokens, sampler, stop, ignore_eos, logprobs, result, speculation,
                                    constraint, started)
            if spec is not None and spec.active:
                answer = read_answer(result.text)
                result.tool_calls = [c.to_json() for c in answer.calls] or None
                result.finish_reason = answer.finish_reason(result.finish_reason)
        finally:  # the answer so far joins the chat, also when the caller stopped reading early
            if chat is not None and (result.total_time or result.token_ids):
                reply: Message = {"role": "assistant", "content": result.text}
                if result.tool_calls:
                    reply = {"role": "assistant", "content": None, "tool_calls": result.tool_calls}
                self.conversation = [*chat, reply]
        self.describe(result)

    def _tokens(self, ids: list[int], max_new_tokens: int, sampler: Sampler, stop: Sequence[str], ignore_eos: bool,
                logprobs: int | None, result: Generation, speculation: _Speculation | None,
                constraint: JsonConstraint | None, started: float) -> _Core:
        detok = _Detokenizer(self.tokenizer)
        if logprobs is not None:
            result.logprobs = []
        context = list(ids)
        hit = done = False
        stops = frozenset() if ignore_eos else frozenset(self.eos_ids)
        while not done:
            remaining = max_new_tokens - len(result.token_ids)
            if speculation is None:
                rows, _ = yield from self._advancing(context, 1, None if constraint else sampler, remaining, stops)
                tokens = [sampler(rows[0] if constraint is None else constraint.mask(rows[0]), context)]
            else:
                tokens, rows = yield from speculation.trip(self, context, sampler, remaining, stops, constraint)
            if not result.token_ids:
                result.time_to_first_token = time.perf_counter() - started
            for token, row in zip(tokens, rows):  # a trip may yield several; never emit past EOS, a stop string or the limit
                if token in self.eos_ids and not ignore_eos:
                    result.finish_reason = "stop"
                    done = True
                    break
                logprob = None if logprobs is None else token_logprobs(row, token, logprobs)
                if result.logprobs is not None and logprob is not None:
                    result.logprobs.append(logprob)
                result.token_ids.append(token)
                context.append(token)
                if constraint is not None:
                    constraint.accept(token)
                delta, hit = detok.push(token, stop)
                result.text += delta
                yield TokenEvent(token, delta, logprob)
                complete = constraint is not None and constraint.done  # the value ended: as at EOS
                if hit or complete:
                    result.finish_reason = "stop"
                if hit or complete or len(result.token_ids) == max_new_tokens:
                    done = True
                    break
        tail = "" if hit else detok.flush()
        if tail:
            result.text += tail
            yield TokenEvent(None, tail)
        if speculation is not None:
            result.extra["speculation"] = speculation.stats()
        result.total_time = time.perf_counter() - started


def _until_forward(core: _Core, sent: Any) -> list[TokenEvent | Forward]:
    """Resume the generation loop until it asks for the blocks (the list's last step) or ends; on a
    worker thread, with the tokens it yields on the way."""
    steps: list[TokenEvent | Forward] = []
    with torch.inference_mode():
        try:
            while not isinstance(step := core.send(sent), Forward):
                steps.append(step)
                sent = None
        except StopIteration:
            return steps
    steps.append(step)
    return steps


def _tools(options: dict[str, Any]) -> ToolSpec | None:
    """The call's tools, validated and compiled (once: a ToolSpec passes through)."""
    tools = options.get("tools")
    if isinstance(tools, ToolSpec):
        return tools
    return tool_spec(tools, options.get("tool_choice"), options.get("parallel_tool_calls"),
                     options.get("response_format"))


def _choice_options(options: dict[str, Any], i: int) -> dict[str, Any]:
    """Answer i of several: its seed is the request's plus i, so answers differ yet repeat."""
    seed = options.get("seed")
    return {**options, "seed": None if seed is None else (seed + i if seed + i < 2**64 else seed + i - 2**64)}


class _Speculation:
    """One run's speculative trips: draft, verify all drafts in one forward, keep what the rule accepts.

    `by_runner`: the drafter is the runner's own (a ring's sampler drafts and judges too), which then
    learns each trip's sampler and is asked for every draft a trip may take (the runner adapts k)."""

    def __init__(self, drafter: Drafter, draft_length: AdaptiveDraftLength, by_runner: bool = False) -> None:
        self.drafter, self.draft_length, self.by_runner = drafter, draft_length, by_runner
        self.trips = self.drafted = self.accepted = 0

    def trip(self, session: Session, context: list[int], sampler: Sampler, remaining: int,
             stop: frozenset[int] = frozenset(), constraint: JsonConstraint | None = None
             ) -> Generator[Forward, torch.Tensor, tuple[list[int], torch.Tensor]]:
        """Tokens the target emits after `context` (1 to k+1), each with the model's logits where it was
        chosen; the caches keep only verified ones. A `constraint` cuts drafts at the first it refuses
        (the target would reject it) and masks each position (it follows the emitted tokens itself)."""
        k = self.draft_length.choose(min(remaining - 1, session.max_length - len(context)))
        draft = Draft([])
        if k > 0:
            began = time.perf_counter()
            draft = self.drafter.propose(context, k, sampler)
            self.draft_length.record_draft(len(draft.tokens), time.perf_counter() - began)
        if constraint is not None:
            valid = constraint.valid_prefix(draft.tokens)
            draft = Draft(draft.tokens[:valid], None if draft.probs is None else draft.probs[:valid])
        began = time.perf_counter()
        ring = self.by_runner and constraint is None
        logits, positions = yield from session._advancing(
            context + draft.tokens, len(draft.tokens) + 1, sampler if ring else None, remaining, stop,
            len(draft.tokens), self.draft_length.max_draft if ring else 0)
        self.draft_length.record_forward(positions, time.perf_counter() - began)
        contexts = [context + draft.tokens[:i] for i in range(len(draft.tokens) + 1)]
        target = sampler.probs(logits if constraint is None else constraint.mask_along(logits, draft.tokens),
                               contexts)
        if sampler.params.greedy:
            tokens = accept_greedy(target.argmax(-1).tolist(), draft.tokens)
        else:
            tokens = accept_sampled(target, draft.tokens, draft.probs, sampler.generator)
        kept = len(tokens) - 1
        session.history = session.history[:len(context) + kept]  # rejected drafts: the next step rewinds them
        self.draft_length.record_trip(len(draft.tokens), kept)
        self.trips += 1
        self.drafted += len(draft.tokens)
        self.accepted += kept
        return tokens, logits

    def stats(self) -> dict[str, Any]:
        return {"max_draft": self.draft_length.max_draft, "trips": self.trips, "drafted": self.drafted,
                "accepted": self.accepted,
                "acceptance_rate": round(self.accepted / self.drafted, 4) if self.drafted else 0.0,
                "tokens_per_trip": round((self.trips + self.accepted) / self.trips, 4) if self.trips else 0.0}


class _Detokenizer:
    """Turns a growing list of ids into text deltas, holding back incomplete characters and stop strings."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0
        self.stopped = False

    def push(self, token: int, stop: Sequence[str]) -> tuple[str, bool]:
        if self.tokenizer is None:
            return "", False
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        for s in stop:
            at = text.find(s) if s else -1
            if at >= 0:
                delta = text[self.emitted:at] if at > self.emitted else ""
                self.emitted = max(self.emitted, at)
                return delta, True
        safe = len(text)
        if text.endswith("\ufffd"):
            safe = len(text.rstrip("\ufffd"))
        held = max((len(s) - 1 for s in stop), default=0)  # a stop string may be starting
        safe = max(self.emitted, min(safe, len(text) - held))
        delta = text[self.emitted:safe]
        self.emitted = safe
        return delta, False

    def flush(self) -> str:
        if self.tokenizer is None or not self.ids:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        delta = text[self.emitted:]
        self.emitted = len(text)
        return delta


class GenerativeModel:
    """What local and remote models share: a head, a tokenizer, and generation over some runner."""

    def __init__(self, head: Head, tokenizer: Any, config: Any) -> None:
        self.head, self.tokenizer, self.config = head, tokenizer, config
        eos = set(config.eos_token_ids)
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.eos_ids = eos

    def new_runner(self, max_length: int) -> BlockRunner:
        raise NotImplementedError

    def run_details(self, runner: BlockRunner) -> dict[str, Any]:
        """Facts about a runner for `Generation.extra`: which nodes serve or served it, if any."""
        served = runner.served()
        return {} if served is None else served.to_json()

    def inference_session(self, max_length: int | None = None, *, speculative: int = 0,
                          drafter: Drafter | None = None) -> Session:
        """A session whose caches persist across calls (multi-turn chat); use it as a context manager.

        `speculative` and `drafter` become its calls' defaults (see Session.stream).
        """
        max_length = max_length or self.config.max_context
        return Session(self.head, self.tokenizer, self.new_runner(max_length), max_length, self.eos_ids,
                       speculative=speculative, drafter=drafter, details=self.run_details)

    def _prompt_ids(self, prompt: Prompt, raw: bool, options: dict[str, Any]) -> list[int]:
        """The prompt's ids (with its tools; `options` get them compiled once)."""
        spec = options["tools"] = _tools(options)
        return encode_prompt(self.tokenizer, prompt, raw, tools=spec and spec.prompt_tools())

    def generate(self, prompt: Prompt, max_new_tokens: int = 64, *, raw: bool = False, **kwargs: Any) -> Generation:
        """One-shot generation in a session sized for this prompt (see Session.generate for options,
        `speculative=` and `drafter=` included)."""
        ids = self._prompt_ids(prompt, raw, kwargs)
        with self.inference_session(min(len(ids) + max_new_tokens, self.config.max_context)) as s:
            result = s.generate(ids, max_new_tokens, **kwargs)
        s.describe(result)  # the receipted chain
        return result

    async def agenerate(self, prompt: Prompt, max_new_tokens: int = 64, *, raw: bool = False,
                        **kwargs: Any) -> Generation:
        """`generate` on an event loop, which it never blocks."""
        ids = await asyncio.to_thread(self._prompt_ids, prompt, raw, kwargs)
        async with self.inference_session(min(len(ids) + max_new_tokens, self.config.max_context)) as s:
            result = await s.agenerate(ids, max_new_tokens, **kwargs)
        s.describe(result)
        return result

    def stream(self, prompt: Prompt, max_new_tokens: int = 64, *, raw: bool = False,
               **kwargs: Any) -> Iterator[TokenEvent]:
        ids = self._prompt_ids(prompt, raw, kwargs)
        with self.inference_session(min(len(ids) + max_new_tokens, self.config.max_context)) as s:
            yield from s.stream(ids, max_new_tokens, **kwargs)

    async def astream(self, prompt: Prompt, max_new_tokens: int = 64, *, raw: bool = False,
                      **kwargs: Any) -> AsyncIterator[TokenEvent]:
        """`stream` on an event loop, which it never blocks."""
        ids = await asyncio.to_thread(self._prompt_ids, prompt, raw, kwargs)
        async with self.inference_session(min(len(ids) + max_new_tokens, self.config.max_context)) as s:
            async with aclosing(s.astream(ids, max_new_tokens, **kwargs)) as events:
                async for event in events:
                    yield event

    def choices(self, prompt: Prompt, n: int, max_new_tokens: int = 64, *, raw: bool = False,
                **kwargs: Any) -> list[Generation]:
        """`n` answers to one prompt in one session, sharing its prefill (see Session.stream_choices)."""
        ids = self._prompt_ids(prompt, raw, kwargs)
        with self.inference_session(min(len(ids) + max_new_tokens, self.config.max_context)) as s:
            results = s.choices(ids, n, max_new_tokens, **kwargs)
        for result in results:
            s.describe(result)
        return results
