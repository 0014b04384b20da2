"""The training loss curve as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def moving_average(values: list[float], width: int) -> np.ndarray:
    """Mean of the last ``width`` values at every step (fewer at the start)."""
    cumulative = np.cumsum(np.asarray(values, np.float64))
    out = cumulative.copy()
    out[width:] = cumulative[width:] - cumulative[:-width]
    counts = np.minimum(np.arange(1, len(values) + 1), width)
    return out / counts


def plot(history: list[float], path: Path, title: str, ylabel: str = "loss", first_step: int = 0) -> Path:
    """Every step's loss, and its moving average, against the global step."""
    # A figure of its own on the Agg canvas, as pipeline.scorecard draws: pyplot's
    # global state and display backends are no business of a training run.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.arange(first_step + 1, first_step + len(history) + 1)
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(steps, history, color="#9bb8d3", linewidth=0.8, label="loss per step")
    width = max(1, len(history) // 20)
    axes.plot(steps, moving_average(history, width), color="#1f4e79", linewidth=1.8, label=f"mean of {width} steps")
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
