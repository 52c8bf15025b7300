"""Hardware profiles and a roofline cost for one step of one transformer block.

Figures are the vendors' spec sheets (dense FP16 tensor throughput, no sparsity; board power):
  - RTX 3060 12 GB: 360 GB/s, 51 TFLOPS FP16 tensor (FP16 accumulate), 170 W
    (NVIDIA GA10x / Ampere GA102 architecture whitepapers; nvidia.com RTX 3060 specs)
  - RTX 3090 24 GB: 936 GB/s, 142 TFLOPS, 350 W (NVIDIA Ampere GA102 whitepaper, table 9)
  - RTX 4090 24 GB: 1008 GB/s, 330 TFLOPS, 450 W (NVIDIA Ada Lovelace architecture whitepaper, table 2)
  - Tesla T4 16 GB: 320 GB/s, 65 TFLOPS mixed precision, 70 W (NVIDIA T4 datasheet)
  - A100 SXM 80 GB: 2039 GB/s, 312 TFLOPS, 400 W (NVIDIA A100 datasheet)
  - Apple M2 Max 64 GB unified: 400 GB/s, 13.6 TFLOPS GPU (Apple newsroom, January 2023); ~60 W under
    GPU load is a reviewer's wall-power figure, not Apple's
  - CPU-only desktop: dual-channel DDR4-3200 (2 × 25.6 GB/s), 8 cores × AVX2 FMA at ~3.5 GHz
    (~0.9 TFLOPS FP32 peak), 65 W TDP (a Ryzen 7 5700G class part)
  - `ci-cpu`: this project's CI machine (2 cores, no GPU, float32), measured rather than specified;
    see CI_CPU below
Idle power is taken as 15% of board power (an assumption). Achieved fractions of peak (BW_EFF,
FLOP_EFF) and the per-block launch overhead are assumptions too, not measurements.

A step of `batch` tokens through one block reads the block's weights once and each token's KV cache,
and does 2·params FLOPs per token: on a GPU its time is the larger of the two (weights stream while
the tensor cores work), on one CPU thread their sum; plus the overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

BW_EFF = 0.7
FLOP_EFF = 0.5


@dataclass(frozen=True)
class Hardware:
    name: str
    memory_gb: float
    bandwidth_gbs: float
    tflops: float
    power_w: float
    overhead_s: float = 0.0002  # kernel launches per block per step
    overlap: bool = True  # memory traffic hides behind compute (GPUs); False: they add up
    bw_eff: float = BW_EFF
    flop_eff: float = FLOP_EFF

    @property
    def idle_w(self) -> float:
        return 0.15 * self.power_w


PROFILES = {h.name: h for h in (
    Hardware("rtx3060", 12, 360, 51, 170),
    Hardware("rtx3090", 24, 936, 142, 350),
    Hardware("rtx4090", 24, 1008, 330, 450),
    Hardware("t4", 16, 320, 65, 70),
    Hardware("a100", 80, 2039, 312, 400),
    Hardware("m2max", 64, 400, 13.6, 60, overhead_s=0.0005),
    Hardware("cpu", 32, 51.2, 0.9, 65, overhead_s=0.001),
)}

# The CI machine, one node thread, float32 SmolLM2-135M blocks (14.2 MB each). README ("Many clients at
# once"): a 10-block span's forward takes 8.8 ms for 1 row and 16.6 ms for 8 rows on one thread. A
# roofline's max() cannot fit both (the weights' read would hide the rows' FLOPs up to ~8 rows); a
# sum does: 0.111 ms per row per block (63.6 GFLOP/s achieved) on top of 0.77 ms to stream the weights
# (18.4 GB/s achieved), which also predicts a 37-token prefill within 10% (see calibrate.py).
CI_CPU = Hardware("ci-cpu", 24, 18.4, 0.0636, 65, overhead_s=0.0, overlap=False, bw_eff=1.0, flop_eff=1.0)
PROFILES[CI_CPU.name] = CI_CPU

# Our software stack, fitted to this project's measured runs (calibrate.py prints the fit): each message
# a client or node sends costs MESSAGE_S of latency (serialising, signing, p2pd on both ends, asyncio),
# fitted to the single-session runs (loopback and WAN lab); on a shared host every message costs
# MESSAGE_CPU_S of CPU over all the processes it passes (the two p2pd daemons, sender and receiver),
# fitted to 8 concurrent sessions on 2 cores, which are CPU-bound.
MESSAGE_S = 0.00175
MESSAGE_CPU_S = 0.0067


@dataclass(frozen=True)
class Model:
    """A Llama-like model: `num_blocks` blocks of `params_per_block` weights at `bytes_per_param`."""

    name: str
    num_blocks: int
    params_per_block: float
    hidden_size: int
    kv_heads: int = 8
    head_dim: int = 128
    bytes_per_param: float = 0.53  # NF4 with a 16-bit scale per 64 weights, as Petals serves 70B models
    act_bytes: int = 2  # a hidden state's value on the wire (float16)
    vocab_size: int = 128_256

    @property
    def head_bytes(self) -> int:
        """The embeddings and the LM head a ring node holds (`--ring`: node/config.py), in float16."""
        return 2 * self.vocab_size * self.hidden_size * 2

    @property
    def block_bytes(self) -> int:
        return int(self.params_per_block * self.bytes_per_param)

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of one token in one block, in float16."""
        return 2 * self.kv_heads * self.head_dim * 2

    @property
    def hidden_bytes(self) -> int:
        """One token's hidden state on the wire."""
        return self.act_bytes * self.hidden_size


# Block sizes: total parameters less the embeddings and LM head, over the blocks (Meta's model cards).
LLAMA3_70B = Model("llama-3-70b", 80, (70.6e9 - 2 * 128256 * 8192) / 80, 8192)
LLAMA3_405B = Model("llama-3-405b", 126, (405.9e9 - 2 * 128256 * 16384) / 126, 16384)
# SmolLM2-135M as this project measures it: 30 blocks in float32 (hidden 576, 9 heads, 3 KV heads of 64,
# MLP 1536: 3,540,096 parameters a block), float32 activations on the wire.
SMOLLM2_135M = Model("smollm2-135m", 30, 3_540_096, 576, kv_heads=3, head_dim=64, bytes_per_param=4, act_bytes=4,
                     vocab_size=49_152)
MODELS = {m.name: m for m in (LLAMA3_70B, LLAMA3_405B, SMOLLM2_135M)}


def step_time(hw: Hardware, model: Model, batch: float, context_tokens: float) -> float:
    """Seconds for one block to process `batch` new tokens (a fluid: any real number) that attend
    `context_tokens` cached ones in all."""
    reading = read_time(hw, model.block_bytes + context_tokens * model.kv_bytes_per_token)
    computing = batch * token_flops_time(hw, model)
    return (max(reading, computing) if hw.overlap else reading + computing) + hw.overhead_s


def read_time(hw: Hardware, moved: float) -> float:
    """Seconds to stream `moved` bytes from the device's memory."""
    return moved / (hw.bandwidth_gbs * 1e9 * hw.bw_eff)


def token_flops_time(hw: Hardware, model: Model) -> float:
    """Seconds of arithmetic one token costs in one block."""
    return 2 * model.params_per_block / (hw.tflops * 1e12 * hw.flop_eff)
