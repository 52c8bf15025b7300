"""Attacks on the paged cache (issue 20) with free identities, on a real 3-node swarm: fair shares
hold where per-identity caps alone did not."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from tests.swarm.raw import RawSession

from .attacker import Attacker, fresh_session
from .conftest import TOKENS

HOGGED = 512  # tokens each hog grows its session to: its cap, half the block-0 node's 1024-token pool


def test_two_identities_stepping_within_their_caps_do_not_keep_an_honest_client_out(attacker, accomplice, nodes,
                                                                                      root, honest):
    """Two identities each grow a session to half of the block-0 node's pool, then step one token a
    second, so nothing is ever idle: the pool is full. An honest client still gets exactly its local
    greedy answer, taking a page from the largest holder above its share (a third of the pool with
    three peers wanting pages), whose client is told `cache_reclaimed`; the hogs keep reopening
    and stepping throughout. Times are printed, not asserted."""
    node = nodes[0, 10]
    baseline = honest()
    hogging, told = [True], Counter()

    async def hog(who: Attacker) -> None:
        while hogging[0]:
            s = RawSession(who.link, node.peer_id, root, fresh_session(), 2048)
            try:
                reply = await s.open()
                if reply["type"] == "opened":
                    reply = await s.step(0, HOGGED)
                while hogging[0] and reply["type"] == "result":
                    try:
                        reply = await s.read(timeout=1)  # told its session ended, or a second (well within
                    except asyncio.TimeoutError:  # --evict-idle-after) passed: its last token again
                        reply = await s.step(HOGGED - 1, 1)  # keeps it active, and takes no page more
                told[reply.get("code", reply["type"])] += 1
            except (ConnectionError, asyncio.IncompleteReadError):
                told["hung up"] += 1
            s.abort()
            await asyncio.sleep(1)

    hogs = [who.start(hog(who)) for who in (attacker, accomplice)]
    try:
        deadline = time.monotonic() + 30
        while attacker.info(node)["load"]["cache_tokens_free"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert attacker.info(node)["load"]["cache_tokens_free"] == 0
        attacked = honest()
    finally:
        hogging[0] = False
        for h in hogs:
            h.result(timeout=60)
    print(f"honest client, connect + {TOKENS} tokens: {baseline:.1f} s alone, {attacked:.1f} s with the block-0 "
          f"node's cache held by two stepping identities (hogs told {dict(told)})")
    assert told["cache_reclaimed"] >= 1
