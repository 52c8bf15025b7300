"""The ring's sampler on a node, in process: when it samples, and that it draws what the client's
sampler draws from the same state (a tiny random head: no store, no processes)."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from ledger.keys import Identity
from node import ring
from node.ring import DraftMemory, RingDrafting, RingHead
from routing import protocol, wire
from routing.errors import ProtocolError
from routing.grants import ring_ticket
from shards.sampling import Sampler, SamplingParams
from tests.shards.random_model import RandomModel

CLIENT = Identity.generate()


def _ring_head() -> tuple[RingHead, RandomModel]:
    model = RandomModel(vocab_size=16)
    return RingHead(model.head, torch.device("cpu"), torch.float32), model


def test_the_sampler_draws_what_the_clients_seeded_sampler_draws_and_stops_at_a_stop_token() -> None:
    head, model = _ring_head()
    client = Sampler(SamplingParams(temperature=0.9, top_k=8, seed=5))
    ticket = ring_ticket(CLIENT, session="s", start=4, tokens=6)
    frame = protocol.Ring("s", ticket.to_wire(), 0.9, 1.0, 8, 0.0, client.generator.get_state().numpy().tobytes(),
                          [15])
    armed = head.arm(frame, CLIENT.peer_id, "s")
    rows = torch.randn(6, 1, 32, generator=torch.Generator().manual_seed(1))

    async def node_tokens() -> list[int]:
        drawn = []
        for i in range(6):
            sampled = await head.sample(armed, wire.encode_tensor(rows[i:i + 1]), 3 + i, 32)
            assert (sampled.kept, sampled.at, sampled.drafts) == (0, 4 + i, [])
            drawn.append(sampled.token)
            if not sampled.onward:
                break
        return drawn

    drawn = asyncio.run(node_tokens())
    expected = [client(model.head.logits(rows[i])[0]) for i in range(6)]
    stop = expected.index(15) + 1 if 15 in expected else len(expected)
    assert drawn == expected[:stop]
    assert not armed.due(armed.sampled, 1, ticket, True)  # nothing after a stop token or the ticket's end


def test_it_samples_after_the_starting_step_and_its_own_steps_only_once_each() -> None:
    head, _ = _ring_head()
    ticket = ring_ticket(CLIENT, session="s", start=4, tokens=3)
    armed = head.arm(protocol.Ring("s", ticket.to_wire()), CLIENT.peer_id, "s")
    assert armed.sampler is None and armed.drafting is None  # greedy, no speculation
    assert armed.due(0, 4, None, True) and not armed.due(0, 5, None, True)  # a pushed step ending where it starts
    assert not armed.due(0, 4, None, False)  # the same step sent by the client: its failover relays it
    armed.sampled, armed.sent = 4, (7,)
    assert not armed.due(0, 4, ticket, True) and armed.due(4, 1, ticket, True) and not armed.due(4, 2, ticket, True)
    assert not armed.due(4, 1, ticket, False)  # the ring's lost step, relayed by the client: the ring is over
    armed.sampled = 7
    assert not armed.due(7, 1, ticket, True)  # past the ticket
    later = ring_ticket(CLIENT, session="s", start=5, tokens=3)
    armed.sampled = 5
    assert not armed.due(5, 1, later, True)  # another ring's step
    with pytest.raises(ProtocolError):
        head.arm(protocol.Ring("s", ticket.to_wire(), temperature=0.5), CLIENT.peer_id, "s")  # no state
    with pytest.raises(ProtocolError):
        head.arm(protocol.Ring("s", ticket.to_wire()), Identity.generate().peer_id, "s")  # not its client's
    with pytest.raises(ProtocolError):
        head.embed([3, 16])  # past the vocabulary


def test_ring_drafting_needs_a_match_of_two_tokens_and_fits_the_tickets_room() -> None:
    drafting = RingDrafting(DraftMemory(4, sampled=True))  # the fixed maximum: only the match decides
    assert drafting.propose([5, 1, 2, 3, 9, 4, 7, 3], 4) == []  # only "3" recurs: a one-token match is no evidence
    assert drafting.propose([5, 1, 2, 3, 9, 4, 2, 3], 4) == [9, 4, 2, 3]  # "2 3" recurs: copy what followed
    assert drafting.propose([5, 1, 2, 3, 9, 4, 2, 3], 2) == [9, 4]  # no further than the ticket runs
    assert drafting.propose([5, 1, 2, 3, 9, 4, 2, 3], 0) == []


def test_drafts_that_fail_behind_short_matches_stop_there_but_not_behind_long_ones() -> None:
    """Each match length keeps its own acceptance: free chat's chance two-token matches stop drafting,
    while a three-token match still drafts; steps without a match leave the evidence as it was."""
    drafting = RingDrafting(DraftMemory(4, sampled=False))
    short, long = [5, 1, 2, 3, 9, 4, 2, 3], [5, 1, 2, 3, 9, 4, 1, 2, 3]

    def around(drafted: list[int]) -> None:  # a ring step of 200 ms, and 50 ms more per draft
        drafting.sent_at = time.perf_counter() - 0.2 - 0.05 * len(drafted)
        drafting.returned(1 + len(drafted), len(drafted), 0)

    for _ in range(20):
        around(drafting.propose(short, 4))
        assert drafting.propose([1, 2, 3, 4], 4) == []  # no match: nothing drafted, nothing forgotten
        around([])
    assert drafting.propose(short, 4) == []
    assert drafting.propose(long, 4) == [9, 4, 1, 2]


def test_a_clients_next_ring_drafts_from_what_its_last_rings_learned() -> None:
    head, _ = _ring_head()
    ticket = ring_ticket(CLIENT, session="s", start=4, tokens=10, drafts=3)
    first = head.arm(protocol.Ring("s", ticket.to_wire(), max_draft=3), CLIENT.peer_id, "s")
    again = head.arm(protocol.Ring("s", ticket.to_wire(), max_draft=3), CLIENT.peer_id, "s")
    assert first.drafting is not None and again.drafting is not None
    assert again.drafting.memory is first.drafting.memory
    other = ring_ticket(CLIENT, session="t", start=4, tokens=10, drafts=4)
    longer = head.arm(protocol.Ring("t", other.to_wire(), max_draft=4), CLIENT.peer_id, "t")
    assert longer.drafting is not None and longer.drafting.memory is not first.drafting.memory  # another k
    seeded = protocol.Ring("s", ticket.to_wire(), 0.5, state=Sampler(SamplingParams(seed=1)).generator.get_state()
                           .numpy().tobytes(), max_draft=3)
    sampled = head.arm(seeded, CLIENT.peer_id, "s").drafting
    assert sampled is not None and sampled.memory is not head.memories[CLIENT.peer_id]  # a seed drafts alike


def test_the_sampler_remembers_only_the_latest_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring, "MAX_MEMORIES", 2)
    head, _ = _ring_head()
    clients = [Identity.generate() for _ in range(3)]
    for c in clients:
        head.arm(protocol.Ring("s", ring_ticket(c, session="s", start=4, tokens=3).to_wire(), max_draft=2),
                 c.peer_id, "s")
    assert list(head.memories) == [c.peer_id for c in clients[1:]]


def test_the_sampler_keeps_the_drafts_its_head_chooses_and_sends_its_own_next() -> None:
    """Greedy speculation in the ring: a step of the sampled token and drafts comes back; the sampler
    keeps the drafts equal to the argmax up to the first that is not, samples the token after them, and
    drafts the next step's from the text so far."""
    head, model = _ring_head()
    ticket = ring_ticket(CLIENT, session="s", start=4, tokens=10, drafts=3)
    armed = head.arm(protocol.Ring("s", ticket.to_wire(), max_draft=3, context=[1, 2, 3, 4]), CLIENT.peer_id, "s")
    rows = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(2))
    argmax = model.head.logits(rows[0]).argmax(-1).tolist()
    rejected = (argmax[1] + 1) % 16
    armed.sampled, armed.sent = 4, (5, argmax[0], rejected, 0)  # the ring step at 4: token 5 and three drafts
    assert armed.drafting is not None
    armed.drafting.match = 2  # drafted behind a two-token match
    armed.context.append(5)
    sampled = asyncio.run(head.sample(armed, wire.encode_tensor(rows), 4, 32))
    assert (sampled.kept, sampled.token, sampled.at, sampled.onward) == (1, argmax[1], 6, True)
    assert armed.context == [1, 2, 3, 4, 5, argmax[0], argmax[1]] and armed.sampled == 6
    assert armed.sent == (argmax[1], *sampled.drafts) and len(sampled.drafts) <= 3
