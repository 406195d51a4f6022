"""Stacked-bar plot of a training step's memory categories (chapter 00 notebooks, demo)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyodl.memory.training import CATEGORIES

COLORS = {
    "parameters": "#4c72b0",
    "buffers": "#8172b2",
    "input": "#937860",
    "gradients": "#dd8452",
    "optimizer_state": "#c44e52",
    "activations": "#55a868",
    "scratch": "#bbbbbb",
}


def plot_memory_breakdown(
    report: Any | Sequence[Any],
    path: str | Path | None = None,
    labels: Sequence[str] | None = None,
    title: str = "training memory",
):
    """Stacked bars of parameters, gradients, optimizer state, activations and scratch.

    Parameters
    ----------
    report : TrainingMemoryReport or AnalyticMemory, or a list of them
        Anything with a ``breakdown()`` dict (one bar each) and ``total_peak_bytes``.
    path : str or Path, optional
        Save the figure there (PNG, SVG... by suffix). The figure is drawn with the Agg
        canvas and never registered with pyplot, so no window opens and no global state
        changes; in a notebook, display the returned figure.
    labels : list of str, optional
        One label per bar (default: "measured"/"analytic" and the batch size).
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    reports = list(report) if isinstance(report, (list, tuple)) else [report]
    if not reports:
        raise ValueError("plot_memory_breakdown: no report to plot")
    for r in reports:
        if not hasattr(r, "breakdown"):
            raise TypeError(
                "plot_memory_breakdown: expected a TrainingMemoryReport or AnalyticMemory, "
                f"got {type(r).__name__}"
            )
    if labels is None:
        labels = [_label(r) for r in reports]
    if len(labels) != len(reports):
        raise ValueError(f"plot_memory_breakdown: {len(labels)} labels for {len(reports)} bars")
    fig = Figure(figsize=(1.6 + 1.4 * len(reports), 4.5))
    FigureCanvasAgg(fig)  # render with Agg, without touching pyplot's global state
    ax = fig.add_subplot()
    bottoms = [0.0] * len(reports)
    for cat in (*CATEGORIES, "scratch"):
        values = [r.breakdown().get(cat, 0) / 2**20 for r in reports]
        if not any(values):
            continue
        ax.bar(labels, values, bottom=bottoms, color=COLORS[cat], label=cat.replace("_", " "))
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    peaks = [r.total_peak_bytes / 2**20 for r in reports]
    ax.scatter(labels, peaks, color="black", marker="_", s=600, zorder=3, label="total peak")
    ax.set_ylabel("MiB")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def _label(report: Any) -> str:
    kind = "analytic" if hasattr(report, "per_layer") else "measured"
    return f"{kind}\nN={report.batch_size}"
