"""The latency-percentile plot (PNG) of the round-trip peers, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import PEERS

PERCENTILES = (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))
COLORS = {"pipe": "#555555", "bare_ask": "#d62728", "slow_path": "#ff7f0e", "fast_path": "#1f77b4",
          "pykka": "#2ca02c", "ray": "#9467bd"}


def latency_png(results: dict[str, Any], path: str | Path) -> str:
    """Draw p50/p90/p99/p99.9 per peer (log scale) to ``path``; return the path, or why not."""
    rt = results.get("roundtrip")
    if not rt or "error" in rt:
        return "not drawn: no round-trip figures"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"not drawn: matplotlib is not installed ({exc}); pip install '.[bench]'"
    peers = [(key, label) for key, label in PEERS if key in rt]
    xs = list(range(len(PERCENTILES)))
    fig, ax = plt.subplots(figsize=(11, 5), dpi=110)
    for key, label in peers:
        ys = [rt[key].get(k) for k, _ in PERCENTILES]
        ax.plot(xs, ys, marker="o", label=f"{label} (p50 {rt[key]['p50_ms']:.3g} ms)",
                color=COLORS.get(key))
    ax.set_yscale("log")
    ax.set_xticks(xs, [name for _, name in PERCENTILES])
    ax.set_ylabel("round trip, ms (log scale)")
    m = results["meta"]
    n = rt["settings"]["samples"]
    ax.set_title(f"Call round trip, {n} samples per peer, interleaved "
                 f"({m['machine']['nproc']} CPUs, Python {m['machine']['python']})", fontsize=10)
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path)
