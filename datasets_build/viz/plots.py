"""Histograms of a build, and the one way pictures get matplotlib (headless, with a clear error)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets_build.core.errors import MissingDependency


def pyplot():
    """matplotlib.pyplot on the Agg backend (no screen needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency("pictures need matplotlib: pip install -e '.[viz]'") from None
    return plt


REFERENCE_LENGTH_FRAMES = (40, 200)  # the reference loaders' length filter, marked on the length plots


def plot_stats(splits: dict[str, dict[str, list]], fps: float, title: str, out: Path) -> list[Path]:
    """Histograms per split of motion length (s), caption length (words) and annotations per
    motion; `splits[name]` holds the columns `length` and `annotations`. Returns the files."""
    plt = pyplot()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    measures = {
        "motion_length": ("motion length (seconds)", lambda c: np.asarray(c["length"]) / fps),
        "caption_length": ("caption length (words)",
                           lambda c: np.asarray([len(a["tokens"]) for anns in c["annotations"] for a in anns])),
        "annotations_per_motion": ("annotations per motion", lambda c: np.asarray([len(a) for a in c["annotations"]])),
    }
    files = []
    for name, (label, measure) in measures.items():
        figure, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 3.2), squeeze=False)
        for ax, (split, columns) in zip(axes[0], splits.items()):
            values = measure(columns)
            if len(values):
                integer = name != "motion_length"
                bins = np.arange(values.min(), values.max() + 2) - 0.5 if integer and np.ptp(values) < 60 else 30
                ax.hist(values, bins=bins, color="#1f77b4")
                ax.axvline(float(np.mean(values)), color="#d62728", linestyle="--", linewidth=1)
                if name == "motion_length":  # the reference loaders keep 40 <= frames < 200
                    for frames in REFERENCE_LENGTH_FRAMES:
                        ax.axvline(frames / fps, color="black", linestyle=":", linewidth=1)
                ax.set_title(f"{split}: n={len(values):,}, mean {np.mean(values):.1f}, median {np.median(values):.1f}",
                             fontsize=9)
            else:
                ax.set_title(f"{split}: empty", fontsize=9)
            ax.set_xlabel(label)
            ax.set_ylabel("count")
        figure.suptitle(f"{title}: {label}")
        figure.tight_layout()
        path = out / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        files.append(path)
    return files
