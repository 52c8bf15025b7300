"""Spot checks at rate 1.0 never convict an honest node, in any precision the swarm allows, while
liars are still convicted: in process over every dtype and travel dtype (and quantized weights),
and through real nodes of three dtypes — relayed, pushed, batched, chunked prefill, speculative
rollback and failover replay. The whole in-process sweep (three spans, longer prompts) is the `long`
test; CI runs every combination on one span with short prompts and answers of a few tokens."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import pytest
import torch

from ledger.keys import Identity
from node.local_swarm import LocalSwarm
from routing import wire
from routing.attestation import FORWARD_SESSION, attest
from routing.evidence import Claim, Evidence, check_evidence, tolerance
from scripts.false_accusation_sweep import DTYPES, PROMPTS, SCHEMES, Row, sweep
from swarmlm.sdk import RemoteModel
from tests.conftest import FIXED_THROUGHPUT, log_tails
from tests.waiting import route_first

pytestmark = pytest.mark.swarm

PROMPT = "What is the capital of France?"
REPEAT = "Repeat after me: one two three four five, one two three four five, one two three"
LONG = " ".join(["The river runs past the old mill and the children count the boats."] * 5)  # > 2 steps of 32
DISHONEST = [sys.executable, str(Path(__file__).with_name("dishonest_node.py"))]


def _assert_honest_margins_below_one_and_liars_caught(rows: list[Row], spans: int) -> None:
    assert len(rows) == spans * len(SCHEMES) * len(DTYPES) ** 2
    assert [r for r in rows if r.margin > 1] == []
    assert all(r.convicted("gross") for r in rows)
    assert all(r.convicted("subtle") for r in rows if r.compute == r.travel == "float32")
    # The old rule bounded a float32 node by float32's tolerance whatever its output travelled in:
    # rounding to bfloat16 alone exceeds it, so this sweep would have convicted it.
    f32_bf16 = [r for r in rows if r.compute == "float32" and r.travel == "bfloat16"]
    assert all(r.honest_error > tolerance("float32", "float32") for r in f32_bf16)


def test_in_process_sweep_honest_margins_below_one_and_liars_caught(default_store):
    """Every scheme × compute × travel dtype, on the middle span."""
    _assert_honest_margins_below_one_and_liars_caught(
        list(sweep(default_store, [(10, 20)], prompts=(LONG[:100],))), spans=1)


@pytest.mark.long
def test_full_sweep_honest_margins_below_one_and_liars_caught(default_store):
    """As `scripts/false_accusation_sweep.py` runs it: every span, every prompt."""
    _assert_honest_margins_below_one_and_liars_caught(
        list(sweep(default_store, [(0, 10), (10, 20), (20, 30)], prompts=(*PROMPTS, LONG))), spans=3)


def _claim(node: Identity, session: str, start: int, sent: torch.Tensor, out: torch.Tensor, root: str) -> Claim:
    return Claim(attest(node, session=session, step=0, start=start, manifest_root=bytes.fromhex(root), blocks=(0, 10),
                        dtype=wire.dtype_name(sent.dtype), input_digest=wire.tensor_digest(sent),
                        output_digest=wire.tensor_digest(out), travel_dtype=wire.dtype_name(out.dtype)), out)


def test_published_evidence_against_an_honest_node_is_rejected_by_re_checkers(default_store):
    """Evidence as the old rule wrote it: a float32 node whose output travelled in bfloat16, judged
    dishonest. Anyone re-checking it now finds the verdict wrong (a client seeing it in the DHT
    drops it and distrusts its publisher); about a real liar the same document holds."""
    store, publisher, node, checker = default_store, Identity.generate(), Identity.generate(), Identity.generate()
    head, stack = store.load_head(dtype=torch.float32), store.load_blocks(0, 10, dtype=torch.float32)
    with torch.inference_mode():
        prefix = head.embed(torch.tensor([store.tokenizer().encode(PROMPT)]))
        start = prefix.shape[1] - 2
        honest = stack(prefix)[:, start:]
    forward = _claim(checker, FORWARD_SESSION, 0, prefix, honest, store.root)

    def document(output: torch.Tensor) -> Evidence:
        step = _claim(node, "s", start, prefix[:, start:], output, store.root)
        return Evidence(root=bytes.fromhex(store.root), blocks=(0, 10), start=start, prefix=prefix, step=step,
                        forward=forward, dishonest=node.peer_id, errors_ppm={}, method="local",
                        publisher=publisher.peer_id, time_ns=1).signed(publisher)

    framed = check_evidence(Evidence.from_bytes(document(honest.to(torch.bfloat16)).to_bytes()), store)
    assert not framed.valid and framed.errors[node.peer_id] > tolerance("float32", "float32")
    lied = check_evidence(document((-honest).to(torch.bfloat16)), store)
    assert lied.valid and lied.dishonest == node.peer_id


@pytest.fixture(scope="module")
def mixed(default_store, tmp_path_factory):
    """float32 0:10, bfloat16 10:20 (twice: a checker, and a spare for failover), float16 20:30; steps
    of at most 32 tokens, so long prompts go in chunks."""
    swarm = LocalSwarm(str(default_store.path), tmp_path_factory.mktemp("accuse"),
                       node_args=["--max-step-tokens", "32", *FIXED_THROUGHPUT])
    with swarm:
        swarm.start_spans([(0, 10), (10, 20), (20, 30), (10, 20)],
                          dtypes=["float32", "bfloat16", "float16", "bfloat16"])
        yield swarm


def _client(swarm: LocalSwarm, store, **kwargs) -> RemoteModel:  # noqa: ANN001
    return RemoteModel.connect(swarm.initial_peers, store.path, spot_check_rate=1.0, seed=1, **kwargs)


def _assert_no_accusation(model: RemoteModel, swarm: LocalSwarm) -> None:
    stats = model.verifier.stats
    assert stats.checks > 0, "nothing was spot-checked"
    assert (stats.convicted, stats.mismatches) == ([], 0), log_tails(swarm)
    assert not any(n.peer_id in model.view.bans for n in swarm.nodes if n.process.poll() is None)


@pytest.mark.parametrize("push", [False, True], ids=["relayed", "pushed"])
def test_mixed_precision_chain_long_and_short_prompts(mixed, default_store, push):
    with _client(mixed, default_store, push=push) as model:
        assert model.generate(PROMPT, 8).text.startswith("The capital of France is Paris")
        model.generate(LONG, 2)  # a prefill of three 32-token chunks, each spot-checked
        _assert_no_accusation(model, mixed)


def test_batched_with_other_sessions(mixed, default_store):
    models = [_client(mixed, default_store) for _ in range(2)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            models[i % 2].generate([PROMPT, REPEAT, LONG[:150], "Name three colours."][i], 6)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert errors == []
        for m in models:
            _assert_no_accusation(m, mixed)
    finally:
        for m in models:
            m.close()


def test_speculative_rollback(mixed, default_store):
    with _client(mixed, default_store) as model:
        g = model.generate(REPEAT, 12, speculative=4)
        assert g.extra["speculation"]["drafted"] > 0
        _assert_no_accusation(model, mixed)


def test_after_failover_replay(mixed, default_store):
    """The bfloat16 node of 10:20 in our chain dies mid-answer: the replacement replays the prefix,
    and the steps after it are spot-checked like any other."""
    with _client(mixed, default_store) as model:
        ids: list[int] = []
        with model.inference_session(max_length=128) as session:
            for event in session.stream(PROMPT, 8, ignore_eos=True):
                ids.append(event.token_id)
                if len(ids) == 3:
                    victim = next(s.peer for s in session.runner.spans if s.hop.start == 10)
                    mixed.kill(next(n for n in mixed.nodes if n.peer_id == victim), signal.SIGKILL)
            assert session.runner.failovers == 1
        _assert_no_accusation(model, mixed)


def test_a_gross_liar_among_low_precision_nodes_is_still_convicted(mixed, default_store):
    """Weights that are not the model's, in bfloat16 ahead of a float16 node: convicted on sight."""
    mixed.env["SWARMLM_TEST_LIE"] = "gross"
    try:
        liar = mixed.spawn_node((10, 20), dtype="bfloat16", extra=["--throughput", "100000"], program=DISHONEST)
    finally:
        del mixed.env["SWARMLM_TEST_LIE"]
    with _client(mixed, default_store) as model:
        route_first(model, [liar.peer_id], [n.peer_id for n in mixed.nodes if n.blocks == (10, 20) and n is not liar])
        model.generate(PROMPT, 4)
        assert model.verifier.stats.convicted == [liar.peer_id], log_tails(mixed)
