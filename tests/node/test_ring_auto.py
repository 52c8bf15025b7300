"""`--ring auto`: a node holds the head only where it serves every block with the head counted in its
memory, since it then closes rings alone; elsewhere the head would take memory from blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import resolve
from node.server import Node
from swarmlm.cli import build_parser


def _node(tmp_path: Path, *flags: str) -> Node:
    args = build_parser().parse_args(["node", "run", "--new-swarm", "--state-dir", str(tmp_path), "--ring", "auto",
                                      *flags])
    return Node(resolve(args, {}))


@pytest.mark.parametrize("flags, rings", [
    pytest.param(["--blocks", "0:30"], True, id="every-block-given"),
    pytest.param(["--blocks", "0:15"], False, id="half-given"),
    pytest.param(["--num-blocks", "10"], False, id="ten-of-auto"),
    pytest.param(["--max-memory", "64GiB"], True, id="auto-with-room"),
    # every block fits without the head, not with it: a float32 block of SmolLM2-135M and its share of the
    # KV reserve take 25.5 MiB, the head 216 MiB; 800 MiB holds 30 blocks alone, 22 beside the head
    pytest.param(["--max-memory", "800MiB"], False, id="auto-without-room-for-the-head")])
def test_a_node_rings_alone_only_where_it_serves_every_block(tmp_path, default_store, flags, rings):
    node = _node(tmp_path, *flags)
    assert node.rings is False  # decided at start, once the span is known
    assert node._rings_alone() is rings
    if "--max-memory" in flags:
        assert node._blocks_that_fit(head=False) == 30  # the head, not the blocks, decides
