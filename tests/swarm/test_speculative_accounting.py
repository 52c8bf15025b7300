"""Rejected speculative drafts through a real swarm: rolled back on every node, never logged as kept."""

from __future__ import annotations

from typing import Sequence

import pytest

from shards.drafting import Draft
from shards.sampling import Sampler
from shards.speculative import AdaptiveDraftLength
from swarmlm.sdk import RemoteModel
from tests.api.conftest import serve_entry

from .raw import info

PROMPT = "What is the capital of France?"
PAGE = 64  # the nodes' default --page-tokens


class WrongDrafter:
    """Always drafts k copies of one token the target never picks here: every draft is rejected."""

    def propose(self, context: Sequence[int], k: int, sampler: Sampler) -> Draft:
        return Draft([0] * k)


def test_rejected_drafts_are_rolled_back_and_logged_apart_from_kept_tokens(swarm3, default_store, local_model,
                                                                          monkeypatch, tmp_path):
    monkeypatch.setattr(AdaptiveDraftLength, "choose", lambda self, limit: min(self.max_draft, limit))
    expected = local_model.generate(PROMPT, 12, ignore_eos=True).token_ids
    with RemoteModel.connect(swarm3.initial_peers, default_store.path, identity=tmp_path / "id.key") as model:
        with model.inference_session(max_length=128, speculative=4, drafter=WrongDrafter()) as s:
            g = s.generate(PROMPT, 12, ignore_eos=True)
            spans = list(s.runner.spans)
            held = [model.client.run(info(model.client, span.peer))["load"]["cache_tokens_used"] for span in spans]
            kept = len(s.history)
        infos = [model.client.run(info(model.client, span.peer)) for span in spans]
    assert g.token_ids == expected
    assert g.extra["speculation"]["drafted"] > 0 and g.extra["speculation"]["accepted"] == 0
    for span, used in zip(spans, held):
        assert used == -(-span.length // PAGE) * PAGE  # a node holds pages for its positions, not past them
        assert span.rolled_back > 0
    assert all(i["load"]["cache_tokens_used"] == 0 for i in infos)  # closing gave every page back
    by_peer = {n.peer_id: n for n in swarm3.nodes}
    for span in spans:
        entry = serve_entry(by_peer[span.peer].ledger, s.runner.session_id)
        assert (entry.tokens, entry.accepted_tokens) == (span.tokens, kept)
        assert entry.tokens - entry.accepted_tokens == span.rolled_back
        assert entry.receipt is not None and entry.receipt.accepted_tokens == kept
