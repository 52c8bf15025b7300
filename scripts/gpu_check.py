"""The GPU check: one prepared run that proves the CUDA path and measures decode, in at most 8 minutes.

GPU machines come rarely and briefly, so everything is measured in one go and every section stands
alone: one that cannot run (no CUDA, no bitsandbytes, no model here, an exception, the time limit)
records why in its place and the others still report. Figures go to OUT/gpu_check.json (rewritten
after each section, so a killed run keeps what it measured) and OUT/summary.txt.

Sections:
- blocks: our blocks on the device equal the CPU float32 reference: float32 within 1e-4 relative
  error per position, bfloat16 within the spot checks' calibrated tolerance (routing/evidence.py);
  stateless prefill and cached decode steps.
- swarm: a 3-process swarm sharing the device (node/local_swarm.py) generates the same greedy text
  as the whole model in this process, in float32.
- decode: a Llama-3-8B-shaped span (scripts/synthetic_model.py, `8b`, bf16) decoding one token:
  tok/s eager vs captured as a CUDA graph (shards/graphed_decode.py), and its speed of light —
  weights' bytes over the step time against the device's measured copy bandwidth, as gpt-fast
  prints; then aggregate tok/s of 1/8/32/64 sessions through the packed batched forward.
- quant: int8 and nf4 spans of the same shape: tok/s and agreement with the bf16 span (nf4 runs
  bitsandbytes' kernel on CUDA, and is skipped there when bitsandbytes cannot be imported).

`--dry-run` runs every section on the CPU with tiny sizes (the test suite runs it: tests/ops/test_gpu_check.py).

    python scripts/gpu_check.py --out DIR [--dry-run] [--time-limit 480] [--sections blocks,decode]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from benchlib import PROMPT
from shards.blocks import BlockStack
from shards.catalog import DEFAULT_MODEL
from shards.graphed_decode import GraphedDecode
from shards.manifest import Quantization
from shards.packed import Segment, run_packed
from shards.paged_cache import DEFAULT_PAGE_TOKENS, PagePool, PagedSequence
from synthetic_model import random_stack

Figures = dict[str, Any]


class Skip(Exception):
    """A section (or part of one) that cannot run here, with the reason."""


class TimeLimit(BaseException):
    """The run's time limit struck; a BaseException so no section's own handler swallows it."""


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the real ones for a GPU, tiny ones for the CPU dry run."""

    device: str
    check_preset: str = "mid"
    bench_preset: str = "8b"
    bench_dtype: str = "bfloat16"
    context: int = 512
    steps: int = 100
    batches: tuple[int, ...] = (1, 8, 32, 64)
    quant_layers: int = 8
    copy_bytes: int = 1 << 30
    swarm_nodes: int = 3
    swarm_tokens: int = 24
    model: str = DEFAULT_MODEL

    @classmethod
    def dry(cls, model: str) -> "Plan":
        return cls(device="cpu", check_preset="tiny", bench_preset="tiny", bench_dtype="float32", context=16,
                   steps=3, batches=(1, 8), quant_layers=2, copy_bytes=1 << 22, swarm_tokens=4, model=model)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.bench_dtype)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds_per_call(fn: Callable[[int], Any], calls: int, device: str, warmup: int = 2) -> float:
    """Mean wall time of `fn(i)` over `calls` calls after `warmup` ones, the device drained at both ends."""
    for i in range(warmup):
        fn(i)
    synchronize(device)
    t0 = time.perf_counter()
    for i in range(calls):
        fn(warmup + i)
    synchronize(device)
    return (time.perf_counter() - t0) / calls


def copy_bandwidth(device: str, nbytes: int) -> float:
    """Device memory bandwidth in bytes/s measured by a large copy (bytes read plus bytes written)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / seconds_per_call(lambda _: dst.copy_(src), 10, device)


def module_bytes(stack: BlockStack) -> int:
    """Bytes a decode step must read: every parameter and buffer of the span (weights, codes, scales)."""
    return sum(t.numel() * t.element_size() for t in [*stack.parameters(), *stack.buffers()])


def relative_errors(ours: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-position relative L2 error, the spot checks' measure (routing/evidence.py)."""
    ours, reference = ours.float().cpu(), reference.float().cpu()
    return (ours - reference).norm(dim=-1).flatten() / reference.norm(dim=-1).flatten().clamp_min(1e-12)


# --- blocks ---------------------------------------------------------------------------------------

@torch.inference_mode()
def check_blocks(plan: Plan) -> Figures:
    from routing.evidence import tolerance

    reference = random_stack(plan.check_preset, "cpu", torch.float32)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randn(2, 24, reference.config.hidden_size, generator=g)
    steps = torch.randn(2, 4, reference.config.hidden_size, generator=g)
    want = _prefill_then_steps(reference, prompt, steps)
    figures: Figures = {"preset": plan.check_preset, "positions": int(want.shape[0] * want.shape[1])}
    for dtype in ("float32", "bfloat16"):
        stack = copy.deepcopy(reference).to(device=plan.device, dtype=getattr(torch, dtype))
        got = _prefill_then_steps(stack, prompt.to(plan.device, stack.dtype), steps.to(plan.device, stack.dtype))
        errors = relative_errors(got, want)
        bound = tolerance(dtype, "float32")
        figures[dtype] = {"max_relative_error": float(errors.max()), "median_relative_error": float(errors.median()),
                          "max_abs_difference": float((got.float().cpu() - want).abs().max()),
                          "bound": bound, "ok": bool(errors.max() <= bound)}
        del stack
    return figures


def _prefill_then_steps(stack: BlockStack, prompt: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The span's outputs for a prefilled prompt and then one cached decode step per column of `steps`."""
    cache = stack.new_cache(prompt.shape[0], prompt.shape[1] + steps.shape[1])
    outs = [stack(prompt, cache, 0)]
    outs += [stack(steps[:, i, None], cache, prompt.shape[1] + i) for i in range(steps.shape[1])]
    return torch.cat(outs, 1)


# --- swarm ----------------------------------------------------------------------------------------

def check_swarm(plan: Plan) -> Figures:
    try:
        from node.local_swarm import LocalSwarm
        from shards.catalog import resolve_model
        from shards.local import LocalModel
        from shards.store import ShardStore
        from swarmlm.sdk import RemoteModel
    except ImportError as e:
        raise Skip(f"the swarm's dependencies are not importable: {e}") from None
    try:
        store = ShardStore(resolve_model(plan.model))
        store.manifest  # noqa: B018 - reads the manifest: is the model here at all?
    except Exception as e:  # noqa: BLE001 - any reason the model is not here is a skip reason
        raise Skip(f"model {plan.model} is not available here: {e}") from None
    local = LocalModel.load(store, plan.device, torch.float32)
    want = local.generate(PROMPT, plan.swarm_tokens, ignore_eos=True)
    del local
    with tempfile.TemporaryDirectory(prefix="gpu-check-swarm-") as tmp, \
            LocalSwarm(str(store.path), Path(tmp), node_args=["--device", plan.device]) as swarm:
        swarm.start(plan.swarm_nodes, store.manifest.num_blocks, dtypes=["float32"] * plan.swarm_nodes)
        with RemoteModel.connect(swarm.initial_peers, store.path, device=plan.device) as remote:
            got = remote.generate(PROMPT, plan.swarm_tokens, ignore_eos=True)
    return {"model": plan.model, "nodes": plan.swarm_nodes, "tokens": plan.swarm_tokens,
            "local_text": want.text, "swarm_text": got.text, "same_tokens": want.token_ids == got.token_ids,
            "local_tok_s": want.tokens_per_second, "swarm_tok_s": got.tokens_per_second}


# --- decode ---------------------------------------------------------------------------------------

@torch.inference_mode()
def decode_rates(stack: BlockStack, plan: Plan, bandwidth: float) -> Figures:
    """Batch-1 decode tok/s of `stack`, eager and as a CUDA graph, with their speed-of-light fractions."""
    weights = module_bytes(stack)
    prompt = torch.randn(1, plan.context, stack.config.hidden_size, device=plan.device).mul_(0.02).to(stack.dtype)
    token = torch.randn(1, 1, stack.config.hidden_size, device=plan.device).mul_(0.02).to(stack.dtype)
    start = torch.full((1,), plan.context, device=plan.device)
    figures: Figures = {}
    for mode, graph in (("eager", False), ("graphed", True)):
        if graph and not plan.device.startswith("cuda"):
            figures[mode] = {"skipped": "CUDA graphs need a CUDA device"}
            continue
        try:
            decode = GraphedDecode(stack, 1, plan.context + plan.steps + 4, graph=graph)
            decode.prefill(prompt)
            step = seconds_per_call(lambda i: decode.step(token, start + i), plan.steps, plan.device)
        except Exception as e:  # noqa: BLE001 - one mode failing must not lose the other's figures
            figures[mode] = {"skipped": f"failed: {type(e).__name__}: {e}"}
            continue
        finally:
            decode = None  # type: ignore[assignment]  # frees its graph and cache before the next mode
        achieved = weights / step
        figures[mode] = {"tok_s": 1 / step, "step_ms": step * 1e3, "achieved_GB_s": achieved / 1e9,
                         "speed_of_light_fraction": achieved / bandwidth}
    return figures


@torch.inference_mode()
def batched_rates(stack: BlockStack, plan: Plan) -> Figures:
    """Aggregate decode tok/s of n sessions, each at `context` tokens, stepped together by the packed forward."""
    c = stack.config
    per_row = plan.context + plan.steps + 4
    pool = PagePool(len(stack.blocks), c.num_kv_heads, c.head_dim,
                    max(plan.batches) * -(-per_row // DEFAULT_PAGE_TOKENS), dtype=stack.dtype, device=plan.device)
    pool.keys.zero_(), pool.values.zero_()  # the benchmark skips prefill: its slots hold zeros, not NaN
    figures: Figures = {}
    for n in plan.batches:
        rows = [PagedSequence(pool) for _ in range(n)]
        for r in rows:
            r.resize(per_row)
            r.length = plan.context
        hidden = torch.randn(n, c.hidden_size, device=plan.device).mul_(0.02).to(stack.dtype)

        def step(i: int) -> torch.Tensor:
            return run_packed(stack, hidden, [Segment(1, plan.context + i, r) for r in rows])

        seconds = seconds_per_call(step, plan.steps, plan.device)
        figures[str(n)] = {"aggregate_tok_s": n / seconds, "step_ms": seconds * 1e3}
        for r in rows:
            r.release()
    if "1" in figures:
        for n in plan.batches[1:]:
            figures[str(n)]["x_one_session"] = figures[str(n)]["aggregate_tok_s"] / figures["1"]["aggregate_tok_s"]
    return figures


def bench_decode(plan: Plan) -> Figures:
    bandwidth = copy_bandwidth(plan.device, plan.copy_bytes)
    stack = random_stack(plan.bench_preset, plan.device, plan.dtype)
    weights = module_bytes(stack)
    figures: Figures = {"preset": plan.bench_preset, "dtype": plan.bench_dtype, "layers": len(stack.blocks),
                        "weights_bytes": weights, "copy_bandwidth_GB_s": bandwidth / 1e9,
                        "speed_of_light_tok_s": bandwidth / weights, "context": plan.context, "steps": plan.steps}
    figures["batch1"] = decode_rates(stack, plan, bandwidth)
    figures["batched"] = batched_rates(stack, plan)
    return figures


# --- quant ----------------------------------------------------------------------------------------

def bitsandbytes_missing() -> str | None:
    """Why bitsandbytes cannot be imported here (installed is not enough: its CUDA library must load), or None."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure is the reason
        return f"{type(e).__name__}: {e}"
    return None


@torch.inference_mode()
def bench_quant(plan: Plan) -> Figures:
    from routing.evidence import SCHEME_TOLERANCE

    bandwidth = copy_bandwidth(plan.device, plan.copy_bytes)
    base = random_stack(plan.bench_preset, plan.device, plan.dtype, layers=plan.quant_layers)
    prompt = torch.randn(1, 32, base.config.hidden_size, device=plan.device).mul_(0.02).to(plan.dtype)
    want = base(prompt)
    figures: Figures = {"preset": plan.bench_preset, "layers": plan.quant_layers, "dtype": plan.bench_dtype,
                        plan.bench_dtype: {"weights_bytes": module_bytes(base), **decode_rates(base, plan, bandwidth)}}
    del base
    for scheme in ("int8", "nf4"):
        kernel = "dequantize, then matmul"
        if scheme == "nf4" and plan.device.startswith("cuda"):
            if reason := bitsandbytes_missing():
                figures[scheme] = {"skipped": f"bitsandbytes is not importable, and nf4 on CUDA is its kernel: {reason}"}
                continue
            kernel = "bitsandbytes matmul_4bit"
        try:
            stack = random_stack(plan.bench_preset, plan.device, plan.dtype, layers=plan.quant_layers,
                                 quantization=Quantization.of(scheme))
            errors = relative_errors(stack(prompt), want)
            figures[scheme] = {"kernel": kernel, "weights_bytes": module_bytes(stack),
                               "max_relative_error_vs_base": float(errors.max()),
                               "median_relative_error_vs_base": float(errors.median()),
                               "scheme_tolerance": SCHEME_TOLERANCE[scheme],
                               **decode_rates(stack, plan, bandwidth)}
            del stack
        except Exception as e:  # noqa: BLE001 - one scheme failing must not lose the other's figures
            figures[scheme] = {"skipped": f"failed: {type(e).__name__}: {e}"}
    return figures


# --- the run --------------------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[Plan], Figures]] = {"blocks": check_blocks, "swarm": check_swarm,
                                                  "decode": bench_decode, "quant": bench_quant}


def environment(plan: Plan) -> Figures:
    env: Figures = {"python": platform.python_version(), "torch": torch.__version__, "plan": asdict(plan),
                    "cuda_available": torch.cuda.is_available(),
                    "bitsandbytes": bitsandbytes_missing() or "importable"}
    if plan.device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        env.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda, memory_free_bytes=free,
                   memory_total_bytes=total)
    return env


def run_section(name: str, plan: Plan, deadline: float) -> Figures:
    """The section's figures, or why it has none (a skip, an exception, the time limit): never raises."""
    t0 = time.monotonic()
    try:
        if t0 >= deadline:
            raise Skip("the run's time limit was reached before this section")
        figures = SECTIONS[name](plan)
    except Skip as e:
        figures = {"skipped": str(e)}
    except TimeLimit:
        figures = {"skipped": "the run's time limit struck during this section"}
    except Exception as e:  # noqa: BLE001 - a failing section must not lose the others
        figures = {"skipped": f"failed: {type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    finally:
        if plan.device.startswith("cuda"):
            torch.cuda.empty_cache()
    figures["seconds"] = time.monotonic() - t0
    return figures


def summary_lines(result: Figures) -> list[str]:
    """Every figure as `section.path = value`, one a line, for reading without a JSON viewer."""
    lines: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k != "traceback":
                    walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            lines.append(f"{prefix} = {value:.4g}" if isinstance(value, float) else f"{prefix} = {value}")

    walk("", result)
    return lines


def headline(result: Figures) -> list[str]:
    """The goals' figures (issue 26): batch-1 graphed decode against its bandwidth limit, 64 sessions vs one."""
    decode = result["sections"].get("decode", {})
    batch1, batched = decode.get("batch1", {}), decode.get("batched", {})
    lines = []
    for mode in ("eager", "graphed"):
        m = batch1.get(mode, {})
        if "tok_s" in m:
            lines.append(f"batch-1 {mode}: {m['tok_s']:.1f} tok/s, {m['achieved_GB_s']:.0f} GB/s = "
                         f"{m['speed_of_light_fraction']:.2f} of the copy bandwidth "
                         f"({decode['copy_bandwidth_GB_s']:.0f} GB/s)")
    for n, m in batched.items():
        ratio = f", {m['x_one_session']:.1f}x one session" if "x_one_session" in m else ""
        lines.append(f"{n} sessions: {m['aggregate_tok_s']:.1f} tok/s aggregate{ratio}")
    for name, figures in result["sections"].items():
        if "skipped" in figures:
            lines.append(f"{name}: skipped: {figures['skipped']}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and summary.txt")
    ap.add_argument("--dry-run", action="store_true", help="every section on the CPU with tiny sizes")
    ap.add_argument("--time-limit", type=float, default=480.0, help="seconds for the whole run (default 8 minutes)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS))
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the swarm section's model (name or store folder)")
    args = ap.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    if unknown := set(sections) - set(SECTIONS):
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    plan = Plan.dry(args.model) if args.dry_run else Plan(device=device, model=args.model)
    if device == "cpu" and not args.dry_run:
        print("no CUDA device: the full sizes would take hours on a CPU; use --dry-run", file=sys.stderr)
        return 2

    def strike(*_: object) -> None:
        raise TimeLimit

    signal.signal(signal.SIGALRM, strike)
    signal.setitimer(signal.ITIMER_REAL, args.time_limit)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    result: Figures = {"environment": environment(plan), "sections": {}}
    for name in sections:
        result["sections"][name] = run_section(name, plan, t0 + args.time_limit)
        result["seconds"] = time.monotonic() - t0
        (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1))
        print(f"{name}: {result['sections'][name]['seconds']:.1f} s", flush=True)
    signal.setitimer(signal.ITIMER_REAL, 0)
    lines = headline(result) + [""] + summary_lines(result)
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(headline(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
