"""One-token decode steps with static shapes, captured once as a CUDA graph and replayed.

A decode step of a span is hundreds of small kernels; launched one by one from Python, a GPU waits
on dispatch rather than on its memory. With every shape fixed — `batch` rows over a dense cache of
`max_length` slots, the rows' positions a tensor on the device, attention masked past each row's
position instead of sliced to it — the whole step records into one CUDA graph, and a step costs
about its weights' bytes over the memory bandwidth. On a CPU the same static step runs eagerly
(no graph there), which is what lets the CPU tests check it against the dense cache's own steps.
"""

from __future__ import annotations

import torch

from .blocks import BlockStack, attention

WARMUP_STEPS = 3  # eager steps on a side stream before capture (cuBLAS workspaces, lazy inits)


class GraphedDecode:
    """Decode steps of `stack` for `batch` rows, each at its own position in [0, max_length)."""

    def __init__(self, stack: BlockStack, batch: int, max_length: int, *, graph: bool | None = None) -> None:
        device = stack.device
        self.stack, self.batch, self.max_length = stack, batch, max_length
        self.cache = stack.new_cache(batch, max_length)  # zeroed: masked slots must not hold NaN
        self.hidden = torch.zeros(batch, 1, stack.config.hidden_size, dtype=stack.dtype, device=device)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)
        self.slots = torch.arange(max_length, device=device)
        self.use_graph = device.type == "cuda" if graph is None else graph
        if self.use_graph and device.type != "cuda":
            raise ValueError("CUDA graphs need a span on CUDA")
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    def _attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Write each row's key and value at its position, attend over the whole cache masked past it."""
        b, heads, _, dim = k.shape
        at = self.positions.view(b, 1, 1, 1).expand(b, heads, 1, dim)
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        keys.scatter_(2, at, k)
        values.scatter_(2, at, v)
        mask = (self.slots[None, :] <= self.positions[:, None])[:, None, None, :]
        return attention(q, keys, values, mask, False)

    def _step(self) -> torch.Tensor:
        return self.stack.run(self.hidden, self.positions[:, None], self._attend)

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._step()  # writes this step's keys at the current positions, as the replay will
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._step()

    @torch.inference_mode()
    def prefill(self, hidden: torch.Tensor) -> torch.Tensor:
        """Fill every row's cache from position 0 with `hidden` (batch, n, hidden_size), eagerly."""
        return self.stack(hidden, self.cache, 0)

    @torch.inference_mode()
    def step(self, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The span's output (batch, 1, hidden_size) for one token per row at `positions` (batch,).

        On a graph the result is the graph's own output buffer, overwritten by the next step.
        """
        self.hidden.copy_(hidden)
        self.positions.copy_(positions)
        if not self.use_graph:
            return self._step()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.out
