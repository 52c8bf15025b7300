"""The planner picks the chain a client routes through: covering, cheapest by what the client measured."""

from __future__ import annotations

import pytest

from routing.errors import NoRouteError
from routing.planner import (CLAIM_CAP, UNMEASURED_RTT, Links, compute_costs, hop_waits, is_relayed, plan_measured_first,
                             plan_route)
from tests.routing.nodes import chain, node

RTT = {"a": 0.01, "b": 0.01, "c": 0.01, "d": 0.01}


def test_a_chain_of_halves_covers_the_model_in_order() -> None:
    hops = plan_route([node("b", 15, 30), node("a", 0, 15)], 0, 30, rtt=RTT)
    assert chain(hops) == [("a", 0, 15), ("b", 15, 30)]


def test_the_faster_of_two_whole_nodes_is_chosen() -> None:
    assert chain(plan_route([node("a", 0, 30, 10.0), node("b", 0, 30, 30.0)], 0, 30, rtt=RTT)) == [("b", 0, 30)]


def test_a_closer_node_wins_at_equal_speed() -> None:
    rtt = {"a": 0.2, "b": 0.01}
    assert chain(plan_route([node("a", 0, 30), node("b", 0, 30)], 0, 30, rtt=rtt)) == [("b", 0, 30)]


def test_a_loaded_node_loses_to_an_idle_one() -> None:
    records = [node("a", 0, 30, active_sessions=3), node("b", 0, 30)]
    assert chain(plan_route(records, 0, 30, rtt=RTT)) == [("b", 0, 30)]


def test_one_hop_beats_two_of_the_same_compute() -> None:
    records = [node("a", 0, 15, 5.0), node("b", 15, 30, 5.0), node("c", 0, 30, 10.0)]
    assert chain(plan_route(records, 0, 30, rtt=RTT)) == [("c", 0, 30)]


def test_a_client_that_rings_prices_a_ring_node_alone_without_its_legs_and_nothing_else_so() -> None:
    """A whole-model node that rings is a token's step away from the next token, the client off the path:
    a far one beats a near plain node of the same speed then, and only then (routing/ring.py)."""
    rtt = {"near": 0.01, "far": 0.3, "a": 0.01, "b": 0.01}
    records = [node("near", 0, 30), node("far", 0, 30, ring=True)]
    assert chain(plan_route(records, 0, 30, rtt=rtt, push=True)) == [("near", 0, 30)]
    assert chain(plan_route(records, 0, 30, rtt=rtt, push=True, ring=True)) == [("far", 0, 30)]
    assert chain(plan_route(records, 0, 30, rtt=rtt, ring=True)) == [("near", 0, 30)]  # relayed: no ring
    # a ring of two keeps the pushed price, the client's legs included: the near node still wins
    halves = [node("near", 0, 30), node("a", 0, 15, ring=True), node("b", 15, 30, ring=True)]
    assert chain(plan_route(halves, 0, 30, rtt={**rtt, "a": 0.3, "b": 0.3}, push=True, ring=True)) == [("near", 0, 30)]
    # a slow ring node alone loses to a fast chain once its step costs more than the legs it saves
    slow = [node("near", 0, 30, 10.0), node("far", 0, 30, 2.0, ring=True)]
    assert chain(plan_route(slow, 0, 30, rtt=rtt, push=True, ring=True)) == [("near", 0, 30)]


def test_a_slow_node_is_left_mid_span_for_a_fast_one() -> None:
    records = [node("a", 0, 30, 1.0), node("b", 10, 30, 100.0)]
    assert chain(plan_route(records, 0, 30, rtt=RTT)) == [("a", 0, 10), ("b", 10, 30)]


def test_a_part_of_the_model_is_planned_within_its_bounds() -> None:
    hops = plan_route([node("a", 0, 20), node("b", 10, 30)], 12, 25, rtt=RTT)
    assert hops[0].start == 12 and hops[-1].end == 25
    assert all(h.record.start <= h.start < h.end <= h.record.end for h in hops)


def test_a_gap_is_named_in_the_error() -> None:
    with pytest.raises(NoRouteError, match=r"block 10 of \[0, 30\)"):
        plan_route([node("a", 0, 10), node("b", 12, 30)], 0, 30, rtt=RTT)


def test_no_node_at_all_is_a_gap_at_the_start() -> None:
    with pytest.raises(NoRouteError, match=r"block 0 of \[0, 30\); 0 usable"):
        plan_route([], 0, 30)


@pytest.mark.parametrize("unusable", [dict(state="draining"), dict(state="joining"), dict(version=99),
                                      dict(max_session_length=100)], ids=str)
def test_nodes_that_cannot_serve_the_session_are_skipped(unusable: dict) -> None:
    records = [node("a", 0, 30, 100.0, **unusable), node("b", 0, 30)]
    assert chain(plan_route(records, 0, 30, rtt=RTT, max_length=1000)) == [("b", 0, 30)]


def test_banned_nodes_are_skipped() -> None:
    records = [node("a", 0, 30, 100.0), node("b", 0, 30)]
    assert chain(plan_route(records, 0, 30, rtt=RTT, banned={"a"})) == [("b", 0, 30)]
    with pytest.raises(NoRouteError):
        plan_route(records, 0, 30, rtt=RTT, banned={"a", "b"})


def test_unmeasured_nodes_are_a_last_resort() -> None:
    records = [node("fast", 0, 30, 1000.0), node("a", 0, 30)]
    assert chain(plan_route(records, 0, 30, rtt={"a": 0.01})) == [("a", 0, 30)]
    with pytest.raises(NoRouteError):
        plan_route([node("fast", 0, 30)], 0, 30, rtt={"a": 0.01}, measured_only=True)
    assert chain(plan_route([node("fast", 0, 30)], 0, 30, rtt={"a": 0.01})) == [("fast", 0, 30)]


def test_nodes_announcing_too_little_cache_for_the_session_are_skipped() -> None:
    """A node whose announced free cache cannot hold the session would refuse the open (or be full by
    then): the client plans around it while others cover, and through it only when nothing else does."""
    records = [node("a", 0, 30, 100.0, cache_tokens_left=500), node("b", 0, 30)]
    assert chain(plan_measured_first(records, 0, 30, rtt=RTT, max_length=1000)) == [("b", 0, 30)]
    assert chain(plan_measured_first(records, 0, 30, rtt=RTT, max_length=500)) == [("a", 0, 30)]
    records = [node("a", 0, 15, cache_tokens_left=0), node("b", 0, 30, 1.0), node("c", 15, 30, cache_tokens_left=0)]
    assert chain(plan_measured_first(records, 0, 30, rtt=RTT, max_length=64)) == [("b", 0, 30)]
    assert chain(plan_route(records, 0, 30, rtt=RTT, max_length=64)) == [("a", 0, 15), ("c", 15, 30)]
    assert chain(plan_measured_first(records[:1], 0, 15, rtt=RTT, max_length=64)) == [("a", 0, 15)]  # last resort
    with pytest.raises(NoRouteError, match="with room for 64 tokens"):
        plan_route(records[:1], 0, 15, rtt=RTT, max_length=64, with_room=True)


def test_announced_throughput_counts_up_to_a_multiple_of_the_median() -> None:
    records = [node("a", 0, 30, 10.0), node("b", 0, 30, 10.0), node("liar", 0, 30, 1e6)]
    costs = compute_costs(records)
    assert costs["liar"] == pytest.approx(1 / (CLAIM_CAP * 10.0 * 30))
    assert costs["a"] == pytest.approx(1 / (10.0 * 30))


def _roofline(batch: int) -> float:
    """Seconds per step through a span of an A100-like node: the weights' read hides the compute up to a
    batch of 40, then the compute grows with it; plus launches."""
    return max(0.04, 0.001 * batch) + 0.002


A100 = dict(throughput=1 / _roofline(1), batch_size=100, batch_throughput=100 / _roofline(100))


def test_a_record_without_batch_figures_is_priced_as_a_node_that_does_not_batch() -> None:
    old = node("old", 0, 30, 10.0, active_sessions=5)
    assert (old.batch_size, old.batch_throughput) == (1, 0.0)
    for records in ([old], [old, node("a", 0, 30, 10.0, batch_size=16, batch_throughput=100.0)]):
        assert compute_costs(records)["old"] == pytest.approx(6 / (10.0 * 30))


@pytest.mark.parametrize("load", [0, 10, 99, 199])
def test_a_batching_node_is_priced_near_its_step_at_the_batch_it_would_run(load: int) -> None:
    cost = compute_costs([node("a100", 0, 80, **A100, active_sessions=load)])["a100"] * 80
    assert _roofline(load + 1) <= cost + 1e-12 and cost <= 1.2 * _roofline(load + 1)
    assert load == 0 or cost < (load + 1) * _roofline(1) / 5  # priced as before, it looked 10-40x slower


def test_a_batch_is_never_priced_faster_per_step_than_one_session() -> None:
    records = [node(p, 0, 30, 10.0, batch_size=4, batch_throughput=1000.0, active_sessions=3) for p in "abc"]
    assert compute_costs(records)["a"] == pytest.approx(1 / (10.0 * 30))  # batch 4 at 4 x 10 tokens/s at most


def test_a_claimed_batch_gain_counts_up_to_a_multiple_of_the_median() -> None:
    honest = [node(p, 0, 30, 10.0, batch_size=16, batch_throughput=100.0) for p in "ab"]
    lies = dict(batch_size=1 << 40, batch_throughput=1e6)
    capped = dict(throughput=CLAIM_CAP * 10.0, batch_size=16, batch_throughput=CLAIM_CAP * 100.0)
    for load in (0, 15, 99):
        liar = compute_costs([*honest, node("liar", 0, 30, 1e6, **lies, active_sessions=load)])["liar"]
        assert liar >= compute_costs([*honest, node("c", 0, 30, **capped, active_sessions=load)])["c"] - 1e-12
    # so it does not draw every session: loaded with 40, it loses to an idle honest node
    records = [*honest, node("liar", 0, 30, 1e6, **lies, active_sessions=40)]
    assert plan_route(records, 0, 30, rtt=RTT | {"liar": 0.01})[0].peer_id != "liar"


def test_a_claimed_round_trip_between_nodes_is_clamped_by_what_the_client_measured() -> None:
    rtt = {"a": 0.01, "b": 0.05}

    def one_ways(records: dict) -> tuple:
        client, between = Links(records, rtt).one_ways(["a", "b"])
        return tuple(client), between[0, 1], between[1, 0]

    assert one_ways({"a": node("a", 0, 15, rtt_ms={"b": 0.0})})[1] == pytest.approx(0.02)
    assert one_ways({"a": node("a", 0, 15, rtt_ms={"b": 1000.0})})[1] == pytest.approx(0.03)
    assert one_ways({"a": node("a", 0, 15, rtt_ms={"b": 50.0})})[2] == pytest.approx(0.025)  # either way
    assert one_ways({"a": node("a", 0, 15, rtt_ms={"b": 50.0}), "b": node("b", 0, 15, rtt_ms={"a": 40.0})}
                    )[1:] == pytest.approx((0.02, 0.02))  # the lower claim
    assert one_ways({})[1] == pytest.approx(0.03)  # no claim: the worst the bounds allow
    assert one_ways({})[0] == pytest.approx((0.005, 0.025))  # the client's own legs: half its round trips


@pytest.mark.parametrize("claimed_ms, want", [(0.0, [("a", 0, 15), ("b", 15, 30)]), (2000.0, [("c", 0, 30)])])
def test_pushed_chains_pay_for_the_link_between_nodes(claimed_ms: float, want: list) -> None:
    """Two fast halves (0.04 s pushed, plus their link) against a slower whole node (0.05 s): the link decides."""
    records = [node("a", 0, 15, 100.0, rtt_ms={"b": claimed_ms}), node("b", 15, 30, 100.0), node("c", 0, 30, 1 / 0.03)]
    assert chain(plan_route(records, 0, 30, rtt={"a": 0.02, "b": 0.02, "c": 0.02}, push=True)) == want


@pytest.mark.parametrize("noisy", [None, "a", "b", "c"])
def test_the_wan_labs_links_pick_each_mode_its_chain_even_with_one_ping_40_ms_high(noisy: str | None) -> None:
    """tests/wan/test_wan_routing.py's links (ms): client-a 200, client-b 60, client-c 140; a-b 250, a-c 60.
    Pushed through c is 55 ms cheaper, relayed through b 80 ms, with any one of the client's pings 40 ms high
    (a loaded machine). Its first links (client 60 to a and b, a-b 200) priced both pushed chains alike: a-b
    is clamped to client-a + client-b, 120 ms."""
    rtt = {p: ms / 1000 + (0.04 if p == noisy else 0.0) for p, ms in {"a": 200, "b": 60, "c": 140}.items()}
    records = [node("a", 0, 15, 1000.0, rtt_ms={"b": 250.0, "c": 60.0}), node("b", 15, 30, 1000.0),
               node("c", 15, 30, 1000.0)]
    assert chain(plan_route(records, 0, 30, rtt=rtt, push=True)) == [("a", 0, 15), ("c", 15, 30)]
    assert chain(plan_route(records, 0, 30, rtt=rtt, push=False)) == [("a", 0, 15), ("b", 15, 30)]


@pytest.mark.parametrize("busy, want", [(0, [("a", 0, 15), ("b", 15, 30)]), (4, [("c", 0, 30)])])
def test_each_hop_through_a_busy_node_waits_for_half_its_iteration(busy: int, want: list) -> None:
    """Two halves pushed to each other (0.03 s of links; a step through each 0.02 s idle, 0.1 s with 4
    sessions, priced at 5) against one idle whole node (0.02 s round trip, 0.26 s a step): idle, the halves
    win (0.07 against 0.28 s); busy, 0.2 s of steps would still win (0.23 s), but each hop also waits half
    an iteration in progress, 0.05 s, and they lose (0.33 s)."""
    records = [node("a", 0, 15, 50.0, active_sessions=busy, rtt_ms={"b": 20.0}),
               node("b", 15, 30, 50.0, active_sessions=busy), node("c", 0, 30, 1 / 0.26)]
    rtt = {"a": 0.02, "b": 0.02, "c": 0.02}
    assert hop_waits(records, compute_costs(records)) == pytest.approx(
        {"a": 0.05 if busy else 0.0, "b": 0.05 if busy else 0.0, "c": 0.0})
    assert chain(plan_route(records, 0, 30, rtt=rtt, push=True)) == want


def test_a_tie_goes_to_the_first_node_listed_relayed_or_pushed() -> None:
    """Planning skips nodes an earlier one beats everywhere; equal ones must still resolve as before."""
    records = [node("a", 0, 30), node("b", 0, 30), node("c", 0, 15), node("d", 15, 30)]
    for push in (False, True):
        assert chain(plan_route(records, 0, 30, rtt=RTT, push=push)) == [("a", 0, 30)]
        assert chain(plan_route(records, 0, 30, rtt=RTT, push=push, banned={"a"})) == [("b", 0, 30)]
        assert chain(plan_route(records[2:], 0, 30, rtt=RTT, push=push)) == [("c", 0, 15), ("d", 15, 30)]


def _relayed(peer: str, start: int, end: int, throughput: float = 10.0, **changes: object):
    """A node at home: its record announces only its circuit through relay R."""
    return node(peer, start, end, throughput, maddrs=[f"/ip4/11.77.0.2/tcp/4000/p2p/R/p2p-circuit/p2p/{peer}"],
                **changes)


def test_only_circuit_addresses_make_a_node_relayed() -> None:
    assert is_relayed(_relayed("home", 0, 30))
    assert not is_relayed(node("a", 0, 30, maddrs=["/ip4/11.77.0.3/tcp/4000/p2p/a"]))
    assert not is_relayed(node("a", 0, 30, maddrs=["/ip4/11.77.0.3/tcp/4000/p2p/a",
                                                   "/ip4/11.77.0.2/tcp/4000/p2p/R/p2p-circuit/p2p/a"]))
    assert not is_relayed(node("a", 0, 30))


@pytest.mark.parametrize("home_rtt, want", [(0.03, "home"), (0.2, "a")])
def test_a_relayed_node_is_planned_at_the_round_trip_measured_through_its_relay(home_rtt: float, want: str) -> None:
    """No penalty on top of what was measured: the relayed node wins when its relay path is the faster."""
    records = [node("a", 0, 30), _relayed("home", 0, 30)]
    for push in (False, True):
        assert chain(plan_route(records, 0, 30, rtt={"a": 0.1, "home": home_rtt}, push=push)) == [(want, 0, 30)]


@pytest.mark.parametrize("link_ms, want", [(10.0, [("a", 0, 15), ("home", 15, 30)]), (400.0, [("c", 0, 30)])])
def test_a_pushed_hop_into_a_relayed_node_costs_what_its_predecessor_measured(link_ms: float, want: list) -> None:
    """The predecessor's neighbour ping runs over the push stream, through the relay: its claim decides
    (0.07 s a step with a 10 ms link, 0.09 s with the worst the bounds allow, against 0.08 s for c)."""
    records = [node("a", 0, 15, 100.0, rtt_ms={"home": link_ms}), _relayed("home", 15, 30, 100.0),
               node("c", 0, 30, 1 / 0.06)]
    assert chain(plan_route(records, 0, 30, rtt={"a": 0.02, "home": 0.05, "c": 0.02}, push=True)) == want


def test_unmeasured_a_relayed_node_loses_to_a_direct_one_but_still_covers() -> None:
    records = [_relayed("home", 0, 30, 20.0), node("a", 0, 30)]
    assert Links({r.peer_id: r for r in records}, {}).client_rtt("home") == pytest.approx(2 * UNMEASURED_RTT)
    assert chain(plan_route(records, 0, 30)) == [("a", 0, 30)]
    assert chain(plan_route(records[:1], 0, 30)) == [("home", 0, 30)]


def _cheapest_by_exhaustion(records: list, start: int, end: int, rtt: dict, push: bool) -> list:
    """Every chain switching at the planner's boundaries, cheapest by the planner's own cost model,
    nothing pruned: the reference its sweeps over undominated servers must agree with."""
    servers = [r for r in records if r.start < end and r.end > start]
    links, per_block = Links({r.peer_id: r for r in records}, rtt), compute_costs(servers)
    waits = hop_waits(servers, per_block)
    half_rtt, between = links.one_ways([r.peer_id for r in servers])
    index = {r.peer_id: i for i, r in enumerate(servers)}
    bounds = sorted({start, end} | {b for r in servers for b in (r.start, r.end) if start < b < end})
    best: dict = {(start, ""): (0.0, [])}
    for p in bounds:
        for (at, prev), (cost, hops) in [item for item in best.items() if item[0][0] == p]:
            for r in (r for r in servers if r.start <= p < r.end):
                i = index[r.peer_id]
                if push:
                    c = cost + (between[index[prev], i] if prev else half_rtt[i])
                else:
                    c = cost + links.client_rtt(r.peer_id)
                c += waits[r.peer_id]
                for q in (q for q in bounds if p < q <= min(r.end, end)):
                    total = c + (q - p) * per_block[r.peer_id] + (half_rtt[i] if push and q == end else 0)
                    state = (q, r.peer_id if push else "")
                    if state not in best or total < best[state][0]:
                        best[state] = (total, [*hops, (r.peer_id, p, q)])
    return min((v for (q, _), v in best.items() if q == end), key=lambda v: v[0])[1]


@pytest.mark.parametrize("push", [False, True])
def test_the_sweep_finds_the_cheapest_chain_of_random_swarms(push: bool) -> None:
    """Random swarms (spans, speeds, loads, round trips, claimed neighbour round trips all drawn): the
    planner's chain is the one exhaustive search finds (ties have probability zero)."""
    import random

    rng = random.Random(7)
    for _ in range(40 if push else 120):
        n, blocks = rng.randint(1, 30), rng.choice([8, 30, 80])
        peers = [f"p{i}" for i in range(n)]
        records = []
        for p in peers:
            a = rng.randrange(blocks)
            b = rng.randint(a + 1, min(blocks, a + rng.choice([2, 8, blocks])))
            claims = {q: rng.uniform(1, 200) for q in rng.sample(peers, min(3, n)) if q != p}
            records.append(node(p, a, b, rng.uniform(0.5, 50), active_sessions=rng.randrange(4), rtt_ms=claims))
        rtt = {p: rng.uniform(0.001, 0.3) for p in peers}
        start, end = sorted(rng.sample(range(blocks + 1), 2))
        try:
            hops = chain(plan_route(records, start, end, rtt=rtt, push=push))
        except NoRouteError:
            continue
        assert hops == _cheapest_by_exhaustion(records, start, end, rtt, push)


@pytest.mark.parametrize("push", [False, True], ids=["relayed", "pushed"])
def test_no_node_is_in_a_chain_twice_even_where_leaving_it_for_a_faster_one_and_back_pays(push) -> None:
    """A node holds one session per client session, so a slow whole-model node around a fast middle one
    (which the sweeps would board again after it) serves the whole stretch instead."""
    records = [node("a", 0, 30, 1.0), node("b", 10, 20, 1000.0), node("c", 25, 30, 1000.0)]
    assert chain(plan_route(records, 0, 30, rtt=RTT, push=push)) == [("a", 0, 25), ("c", 25, 30)]
