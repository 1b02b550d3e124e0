"""PNG figures of ``select`` (score distributions per source), ``bon`` (accuracy against N) and ``prm train``
(held-out figures and loss over training).

matplotlib is optional (``pip install "reasonflux-rl[plots]"``) and imported only inside these functions. Figures
are drawn on matplotlib's object API with the Agg canvas, never through ``pyplot``, so that calling them from a
notebook or a training script changes no global backend or figure state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reasonflux_rl.errors import ConfigError
from reasonflux_rl.tools.outputs import atomic_output

INSTALL_HINT = 'the figures need matplotlib: pip install "reasonflux-rl[plots]" (or pass --no-plot)'
_METHOD_STYLE = {
    "prm": ("PRM best-of-N", "o", "-"),
    "majority": ("majority vote", "s", "-"),
    "weighted_majority": ("PRM-weighted majority", "D", "-"),
    "random": ("random pick (expected)", "^", "--"),
    "oracle": ("oracle (any correct)", "v", ":"),
}


def require_matplotlib() -> None:
    """Raise [`ConfigError`] with the install command when matplotlib cannot be imported.

    Example:
    ```python
    >>> from reasonflux_rl.tools.plots import require_matplotlib
    >>> require_matplotlib()  # matplotlib is installed with the test extra

    ```
    """
    _figure_class()


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ConfigError(INSTALL_HINT) from err
    return Figure


def _save(figure: Any, path: str | Path) -> Path:
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return Path(path)


def score_distributions(
    groups: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    threshold: float | None = None,
    source_thresholds: Mapping[str, float | None] | None = None,
    overlap: float | None = None,
    bins: int = 20,
    bounds: tuple[float, float] = (0.0, 1.0),
    title: str = "PRM score distribution",
) -> Path:
    """Overlapping histograms (density) of each source's scores, with the selection threshold, written as a PNG.

    ``threshold`` is drawn as one black dashed line; ``source_thresholds`` (a balanced selection) as one dotted line
    per source in its colour. ``overlap`` is printed in the title.

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.plots import score_distributions
    >>> path = score_distributions({"R1": [0.2, 0.7, 0.9], "other": [0.1, 0.3]}, Path(tempfile.mkdtemp()) / "s.png",
    ...                            threshold=0.7, overlap=0.4)
    >>> path.read_bytes()[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'

    ```
    """
    figure = _figure_class()(figsize=(7.5, 4.5))
    ax = figure.add_subplot()
    low, high = bounds
    edges = [low + (high - low) * i / bins for i in range(bins + 1)]
    colours = {}
    for index, (name, values) in enumerate(groups.items()):
        colour = f"C{index % 10}"
        colours[name] = colour
        ax.hist(values, bins=edges, density=True, alpha=0.35, color=colour, label=f"{name} (n={len(values)})")
        ax.hist(values, bins=edges, density=True, histtype="step", linewidth=1.5, color=colour)
    if threshold is not None:
        label = f"selection threshold {threshold:.3f}"
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.5, label=label)
    for name, value in (source_thresholds or {}).items():
        if value is not None:
            ax.axvline(value, color=colours.get(name, "black"), linestyle=":", linewidth=2,
                       label=f"{name} threshold {value:.3f}")
    ax.set_xlim(low, high)
    ax.set_xlabel("aggregated PRM score")
    ax.set_ylabel("density")
    ax.set_title(title if overlap is None else f"{title}\noverlap between sources: {overlap:.3f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def bon_accuracy(table: Sequence[Mapping[str, float]], path: str | Path, *, title: str = "Best-of-N accuracy") -> Path:
    """Accuracy against N (log2 axis) for each method of a Best-of-N table (rows ``{"n": N, method: accuracy}``).

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.plots import bon_accuracy
    >>> table = [{"n": 1, "prm": 0.5, "oracle": 0.5}, {"n": 2, "prm": 0.6, "oracle": 0.8}]
    >>> bon_accuracy(table, Path(tempfile.mkdtemp()) / "bon.png").stat().st_size > 1000
    True

    ```
    """
    figure = _figure_class()(figsize=(6.5, 4.5))
    ax = figure.add_subplot()
    ns = [row["n"] for row in table]
    methods = [key for key in (table[0] if table else {}) if key != "n"]
    for index, method in enumerate(methods):
        label, marker, style = _METHOD_STYLE.get(method, (method, "o", "-"))
        percent = [100 * row[method] for row in table]
        ax.plot(ns, percent, marker=marker, linestyle=style, color=f"C{index}", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_ylim(-2, 102)
    ax.set_xlabel("N (candidates per problem)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


_HELD_OUT_CURVES = (
    ("eval_step_accuracy", "step accuracy at 0.5"),
    ("eval_wrong_step_recall", "recall on wrong steps"),
    ("eval_step_auroc", "step AUROC"),
    ("eval_trajectory_overlap", "overlap, good vs bad trajectories"),
)


def prm_training_curves(log_history: Sequence[Mapping[str, Any]], path: str | Path, *,
                        title: str = "PRM training") -> Path:
    """``prm train``'s figure: the held-out figures over training (left; the overlap of good and bad trajectories'
    score distributions falls as the PRM tells them apart) and the training and held-out loss (right), from a
    trainer's ``log_history``.

    Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from reasonflux_rl.tools.plots import prm_training_curves
    >>> history = [{"step": 0, "eval_step_accuracy": 0.5, "eval_loss": 0.3}, {"step": 5, "loss": 0.2},
    ...            {"step": 10, "eval_step_accuracy": 0.9, "eval_loss": 0.1}]
    >>> prm_training_curves(history, Path(tempfile.mkdtemp()) / "prm.png").read_bytes()[:4]
    b'\\x89PNG'

    ```
    """
    figure = _figure_class()(figsize=(11, 4.2))
    held_out, losses = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for index, (key, label) in enumerate(_HELD_OUT_CURVES):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
        if points:
            held_out.plot(*zip(*points), marker="o", color=f"C{index}", label=label)
    held_out.set_ylim(-0.02, 1.02)
    held_out.set_xlabel("optimizer step")
    held_out.set_title("held-out" if held_out.lines else "held-out: no evaluation (eval_strategy)", fontsize=10)
    for index, (key, label) in enumerate((("loss", "training loss"), ("eval_loss", "held-out loss"))):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
        if points:
            losses.plot(*zip(*points), marker="." if key == "loss" else "o", color=f"C{index + 4}", label=label)
    losses.set_xlabel("optimizer step")
    losses.set_title("objective (per row)", fontsize=10)
    for ax in (held_out, losses):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return _save(figure, path)
