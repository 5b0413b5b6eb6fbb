"""The report's plots: scalability (Tables 4 and 5), robustness (Fig. 3a-b) and code length
(Fig. 3c), as PNG files."""

from __future__ import annotations

import os

import numpy as np


def code_length_points(report: dict) -> list[tuple[str, int, float, float]]:
    """(model, bits, mmAP, FR1) of the trained models, when they have several code lengths."""
    points = sorted(((n, m["bits"], m["benchmark_one"]["mmAP"], m["benchmark_two"]["FR1"])
                     for n, m in report["methods"].items() if m.get("workdir")),
                    key=lambda p: p[1])
    return points if len({p[1] for p in points}) > 1 else []


def write_plots(report: dict, out: str) -> list[str]:
    """PNG plots of scalability, robustness and code length; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    counts = report["distractor_counts"]
    methods = report["methods"]
    if len(counts) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, title in zip(axes, ("mmAP@R", "FR1"),
                                  ("Benchmark I: mmAP@R", "Benchmark II: FR1"), strict=True):
            for name, m in methods.items():
                ax.plot(counts, m["scalability"][key], marker="o", label=name)
            ax.set(title=title, xlabel="distractors", ylabel=key)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "scalability.png"), dpi=110)
        plt.close(fig)
        written.append("scalability.png")
    kinds = [k for k in ("seen", "unseen") if any(k in m["robustness"] for m in methods.values())]
    if kinds:
        fig, axes = plt.subplots(1, len(kinds), figsize=(7 * len(kinds), 4), squeeze=False)
        for ax, kind in zip(axes[0], kinds, strict=True):
            rows = {n: m["robustness"][kind] for n, m in methods.items() if kind in m["robustness"]}
            names = sorted({t for r in rows.values() for t in r} - {"mixed"}) + ["mixed"]
            width = 0.8 / len(rows)
            for i, (method, r) in enumerate(rows.items()):
                ax.bar(np.arange(len(names)) + i * width, [r.get(t, np.nan) for t in names],
                       width, label=method)
            ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30,
                          ha="right", fontsize=8)
            ax.set(title=f"FR1 per {kind} transform", ylabel="FR1")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "robustness.png"), dpi=110)
        plt.close(fig)
        written.append("robustness.png")
    points = code_length_points(report)
    if points:
        fig, ax = plt.subplots(figsize=(5, 4))
        bits = [p[1] for p in points]
        ax.plot(bits, [p[2] for p in points], marker="o", label="Benchmark I mmAP")
        ax.plot(bits, [p[3] for p in points], marker="s", label="Benchmark II FR1")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="code length (bits)", title="Code length")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "code_length.png"), dpi=110)
        plt.close(fig)
        written.append("code_length.png")
    return written
