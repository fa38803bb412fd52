#!/usr/bin/env python3
"""Draws Tools/bench results: grouped bars of total time and downtime per contender, for each
path × workload, with min–max whiskers. Usage: chart.py RESULTS.json OUT.png (needs matplotlib)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

COLORS = {"raw": "#7f7f7f", "raw-prefault": "#c7c7c7", "ferry": "#1f77b4", "ferry-baseline": "#aec7e8", "qemu-multifd": "#d62728", "qemu-precopy": "#ff9896",
          "qemu-postcopy": "#9467bd", "qemu-autoconverge": "#8c564b"}


def _wrap(workload):
    """Long workload specs go on two lines (kind, then parameters) so neighbours don't collide."""
    return workload.replace(":", ":\n", 1) if len(workload) > 12 else workload


def main(results_path, png_path):
    with open(results_path) as f:
        data = json.load(f)
    rows = [r for r in data["summary"] if r.get("total_ms")]
    groups = list(dict.fromkeys((r["path"], r["workload"]) for r in rows))
    contenders = list(dict.fromkeys(r["contender"] for r in rows))
    index = {(r["path"], r["workload"], r["contender"]): r for r in rows}
    # one slot per bar that exists, groups side by side with a gap: no empty slots
    slots, centers, x = [], [], 0.0
    for g in groups:
        first = x
        for c in contenders:
            if (g[0], g[1], c) in index:
                slots.append((x, index[(g[0], g[1], c)]))
                x += 1
        centers.append((first + x - 1) / 2)
        x += 0.8
    fig, axes = plt.subplots(2, 1, figsize=(min(16, max(8, 0.55 * len(slots) + 0.5 * len(groups) + 2)), 8.5))
    meta = data["meta"]
    for ax, key, title in ((axes[0], "total_ms", "total migration time (ms, log scale)"),
                           (axes[1], "downtime_ms", "downtime (ms, log scale; the raw copies have none)")):
        for c in contenders:
            pts = [(sx, r[key]) for sx, r in slots if r["contender"] == c and r.get(key)]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1]["median"] for p in pts]
            err = [[p[1]["median"] - p[1]["min"] for p in pts], [p[1]["max"] - p[1]["median"] for p in pts]]
            ax.bar(xs, ys, 0.9, label=c, color=COLORS.get(c), yerr=err, capsize=3, error_kw={"elinewidth": 1})
            for xx, p in zip(xs, pts):
                y = p[1]["median"]
                ax.annotate(f"{y:.0f}" if y >= 10 else f"{y:.1f}", (xx, p[1]["max"]), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xlim(-0.8, x - 0.5)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(centers)
        ax.set_xticklabels([f"{p}\n{_wrap(w)}" for p, w in groups], fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.margins(y=0.2)
    axes[0].legend(fontsize=8, loc="upper left", ncol=len(contenders))
    fig.suptitle(f"Ferry vs raw copy vs QEMU — {meta.get('image_size')} image, median of {meta.get('runs')} "
                 f"run(s), whiskers min–max ({meta.get('started')})", fontsize=11)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: chart.py RESULTS.json OUT.png")
    main(sys.argv[1], sys.argv[2])
