"""A test-only node that dies between its result and its push: from its fourth push on it leaves the
push unsent, lets the step's result go to its client as if the push had left, and exits half a second
later. So a process killed mid-step loses a push it had written but its daemon had not yet sent on
(the 32-node scale test). Usage: the arguments of `python -m node`, e.g. `run ...`."""

from __future__ import annotations

import asyncio
import os
import sys

from node.push import PushLinks

DIES_AT = 4  # the prompt's push, then two tokens', then the lost one
_genuine_send = PushLinks.send
_pushes = 0


async def _send_until_it_dies(self: PushLinks, peer, maddrs, push) -> None:  # noqa: ANN001
    global _pushes
    _pushes += 1
    if _pushes < DIES_AT:
        return await _genuine_send(self, peer, maddrs, push)
    asyncio.get_running_loop().call_later(0.5, os._exit, 1)


PushLinks.send = _send_until_it_dies  # type: ignore[method-assign]

if __name__ == "__main__":
    from node.cli import main

    sys.exit(main(sys.argv[1:]))
