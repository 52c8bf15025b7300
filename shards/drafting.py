"""Drafters: cheap guesses of the next few tokens, which the target then checks in one trip.

A drafter sees the whole context at every call and keeps whatever state it likes in step with
it (a draft model rewinds its cache to the longest prefix it still holds), so rejected drafts
need no separate undo call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from .config import ModelConfig
from .errors import ShardsError
from .manifest import Manifest
from .sampling import Sampler

# Tokenizer files that only format prompts or name special tokens' roles: they may differ
# between a model and its draft (base vs instruct) without changing which text is which id.
_FORMATTING_FILES = {"chat_template.jinja", "chat_template.json", "tokenizer_config.json", "special_tokens_map.json"}


class IncompatibleDraftError(ShardsError):
    """The draft model does not share the target's vocabulary, so its token ids mean other text."""


@dataclass
class Draft:
    tokens: list[int]
    # (len(tokens), vocab) distributions the tokens were drawn from (after temperature/top-k/top-p);
    # None when every token was certain (prompt lookup, greedy drafting).
    probs: torch.Tensor | None = None


class Drafter(Protocol):
    def propose(self, context: Sequence[int], k: int, sampler: Sampler) -> Draft:
        """Up to `k` tokens likely to follow `context`, drawn as `sampler` would draw (k >= 1)."""
        ...


class DraftSession(Protocol):
    """A draft model's inference session, as a drafter uses it (shards/generation.py's Session)."""

    max_length: int

    def feed(self, ids: list[int]) -> torch.Tensor: ...

    def close(self) -> None: ...


class DraftModel(Protocol):
    """What a draft model must offer (shards/local.py's LocalModel does): declared here, so this
    module imports neither generation nor local, which import it."""

    config: ModelConfig

    @property
    def manifest(self) -> Manifest: ...

    def inference_session(self, max_length: int) -> DraftSession: ...


class PromptLookupDrafter:
    """Drafts by copying: the latest earlier occurrence of the context's last n tokens (longest n
    first, from `max_ngram` down to `min_ngram`) is assumed to continue as it did then.

    Fits edits, summaries and code, where the answer repeats its input; no model, no memory.
    """

    def __init__(self, min_ngram: int = 1, max_ngram: int = 3) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ShardsError(f"n-gram range must satisfy 1 <= min <= max, got {min_ngram}..{max_ngram}")
        self.min_ngram, self.max_ngram = min_ngram, max_ngram

    def propose(self, context: Sequence[int], k: int, sampler: Sampler) -> Draft:
        return Draft(self.match(context, k)[1])

    def match(self, context: Sequence[int], k: int) -> tuple[int, list[int]]:
        """How long the matched n-gram is (0: none) and the k tokens it drafts: a longer match is
        stronger evidence that the text repeats."""
        ids = list(context)
        for n in range(min(self.max_ngram, len(ids) - 1), self.min_ngram - 1, -1):
            tail = ids[-n:]
            for start in range(len(ids) - n - 1, -1, -1):
                if ids[start:start + n] == tail:
                    return n, _copy_forward(ids, start + n, k)
        return 0, []


def _copy_forward(ids: list[int], source: int, k: int) -> list[int]:
    """k tokens copied from `source` on, where the copy may run into its own output (as in LZ77):
    a repeat that started one period back keeps repeating."""
    out: list[int] = []
    for i in range(source, source + k):
        out.append(ids[i] if i < len(ids) else out[i - len(ids)])
    return out


def check_compatible(target: Manifest, draft: Manifest) -> None:
    """Refuse a draft whose vocabulary differs from the target's: same size, and the same digest
    for every tokenizer file that maps text to ids."""
    if draft.config.vocab_size != target.config.vocab_size:
        raise IncompatibleDraftError(
            f"the draft model's vocabulary has {draft.config.vocab_size} tokens but the target's has "
            f"{target.config.vocab_size}; choose a draft from the same model family (same tokenizer)")
    mine, theirs = _vocabulary_digests(target), _vocabulary_digests(draft)
    if not mine or not theirs:
        which = "target" if not mine else "draft"
        raise IncompatibleDraftError(f"the {which} store has no tokenizer files, so the draft cannot be shown to "
                                     "share the target's vocabulary; re-pack it from a source with a tokenizer")
    if mine != theirs:
        differ = sorted(f for f in mine.keys() | theirs.keys() if mine.get(f) != theirs.get(f))
        raise IncompatibleDraftError(
            f"the draft model's tokenizer differs from the target's ({', '.join(differ)}); its token ids would "
            "mean other text — choose a draft packed with the same tokenizer")


def _vocabulary_digests(manifest: Manifest) -> dict[str, str]:
    names = {t.file.rsplit("/", 1)[-1]: t.sha256 for t in manifest.tokenizer}
    return {name: digest for name, digest in names.items() if name not in _FORMATTING_FILES}


class ModelDrafter:
    """Drafts with a small local model of the target's vocabulary, one token per forward, with
    its own KV cache (grown by doubling; rewound to the common prefix at every call)."""

    def __init__(self, draft: DraftModel, target: Manifest) -> None:
        check_compatible(target, draft.manifest)
        self.model = draft
        self.session: DraftSession | None = None

    def propose(self, context: Sequence[int], k: int, sampler: Sampler) -> Draft:
        ids = list(context)
        k = min(k, self.model.config.max_context - len(ids) + 1)
        if k < 1:
            return Draft([])
        session = self._session(len(ids) + k - 1)
        tokens: list[int] = []
        rows: list[torch.Tensor] = []
        for _ in range(k):
            logits = session.feed(ids + tokens)
            if sampler.params.greedy:
                tokens.append(int(logits.argmax()))
                continue
            q = sampler.probs(logits)
            tokens.append(int(torch.multinomial(q, 1, generator=sampler.generator)))
            rows.append(q)
        return Draft(tokens, torch.stack(rows) if rows else None)

    def _session(self, length: int) -> DraftSession:
        """A draft session holding at least `length` positions (a new, larger one re-reads the context)."""
        session = self.session
        if session is None or length > session.max_length:
            held = session.max_length if session is not None else 0
            self.close()
            session = self.session = self.model.inference_session(
                min(self.model.config.max_context, max(length, 2 * held, 256)))
        return session

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def __enter__(self) -> "ModelDrafter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
