"""The pictures of a run, one PNG each: throughput against the bound over time, servers per block over
time (a heat map per policy), and the cumulative distribution of time per token per policy."""

from __future__ import annotations

from pathlib import Path

from .engine import Metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def write_pngs(runs: dict[str, Metrics], out: Path, title: str) -> list[Path]:
    """Write the three figures for these runs (policy name → its metrics) into `out`; their paths."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "throughput.png", out / "coverage.png", out / "latency_cdf.png"]

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, m in runs.items():
        minutes = [t / 60 for t, *_ in m.series]
        line, = ax.plot(minutes, [tps for _, tps, _, _ in m.series], label=f"{name}: delivered")
        ax.plot(minutes, [bound for _, _, bound, _ in m.series], linestyle="--", color=line.get_color(),
                label=f"{name}: bound of its placement")
    ax.set_yscale("log", nonpositive="mask")
    ax.set(xlabel="minutes", ylabel="tokens/s (log)", title=f"{title}: throughput and the max-flow bound")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs)), squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], runs.items()):
        end = m.series[-1][0] / 60 if m.series else 1.0
        columns = list(zip(*m.servers)) if m.servers else [[0]]
        image = ax.imshow(columns, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                          extent=(0, end, 0, len(columns)), vmin=0)
        zero = [[1.0 if c == 0 else float("nan") for c in row] for row in columns]  # no server: red
        ax.imshow(zero, aspect="auto", origin="lower", cmap="autumn", interpolation="nearest",
                  extent=(0, end, 0, len(columns)))
        ax.set(ylabel="block", title=f"{name}: servers per block (red: none)")
        fig.colorbar(image, ax=ax, label="servers")
    axes[-1, 0].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, m in runs.items():
        xs = sorted(m.time_per_token)
        ax.step([x * 1000 for x in xs], [(i + 1) / len(xs) for i in range(len(xs))], where="post",
                label=f"{name} ({len(xs)} sessions)")
    ax.set(xscale="log", xlabel="time per token, ms (per session)", ylabel="share of sessions",
           title=f"{title}: time per token")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths
