"""The ring's sampler on a node, in process: when it samples, and that it draws what the client's
sampler draws from the same state (a tiny random head: no store, no processes)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from ledger.keys import Identity
from node.ring import RingHead
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
        return [await head.sample(armed, wire.encode_tensor(rows[i:i + 1]), 4 + i, 32) for i in range(6)]

    drawn = asyncio.run(node_tokens())
    assert drawn == [client(model.head.logits(rows[i])[0]) for i in range(6)]
    assert not armed.ends(3) and armed.ends(15) and not armed.due(9, ticket)  # nothing after a stop token


def test_it_samples_after_the_starting_step_and_its_own_steps_only_once_each() -> None:
    head, _ = _ring_head()
    ticket = ring_ticket(CLIENT, session="s", start=4, tokens=3)
    armed = head.arm(protocol.Ring("s", ticket.to_wire()), CLIENT.peer_id, "s")
    assert armed.sampler is None  # greedy
    assert armed.due(4, None) and not armed.due(5, None)  # a plain step ending where the ring starts
    armed.sampled = 4
    assert not armed.due(4, ticket) and armed.due(5, ticket) and armed.due(6, ticket)
    assert not armed.due(7, ticket)  # past the ticket
    later = ring_ticket(CLIENT, session="s", start=5, tokens=3)
    assert not armed.due(5, later)  # another ring's step
    with pytest.raises(ProtocolError):
        head.arm(protocol.Ring("s", ticket.to_wire(), temperature=0.5), CLIENT.peer_id, "s")  # no state
    with pytest.raises(ProtocolError):
        head.arm(protocol.Ring("s", ticket.to_wire()), Identity.generate().peer_id, "s")  # not its client's
    with pytest.raises(ProtocolError):
        head.embed(16)  # past the vocabulary
