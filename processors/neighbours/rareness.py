"""Caption rareness (ReMoDiffuse's analysis): r = 1 - max cosine to any training caption.

`Rareness` (a dataset step) writes `<out>/rareness/{val,test}`, `rareness.png` and `summary.json`;
`tail_mean` and `balanced_mean` aggregate any per-sample metric over the rarest 5% or over 100
equal-width rareness bins; `plot_rareness` draws the distribution (also used by `stats`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
from datasets import Dataset, DatasetDict, Features, Value

from models.eval.metrics import balanced_mean, tail_mean  # noqa: F401 (re-exported: defined with the metrics)
from processors.base import DatasetStep, save_dataset
from processors.neighbours.hybrid import training_annotations, hybrid_topk
from processors.text.features import read_annotations


@dataclasses.dataclass(frozen=True)
class Rareness(DatasetStep):
    """r = 1 - max cosine to any training caption, per annotation of the evaluation splits."""

    name: ClassVar[str] = "rareness"
    version: ClassVar[str] = "1"
    cites: ClassVar[tuple[str, ...]] = ("remodiffuse",)
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    extra: ClassVar[str] = "retrieval"

    eval_splits: tuple[str, ...] = ("val", "test")
    column: str = "text_features"
    plot: bool = dataclasses.field(default=True, compare=False)
    device: str | None = dataclasses.field(default=None, compare=False)

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("id", "annotations", self.column)

    def run(self, splits: DatasetDict, folder: Path, cache: Path) -> None:
        db = training_annotations(splits, self.column, self.name)
        out, values = {}, {}
        for split in [s for s in self.eval_splits if s in splits]:
            queries = read_annotations(splits[split], self.column, split)
            idx, cos = hybrid_topk(queries.features, queries.lengths, db.features, db.lengths, 1, 0.0,
                                   device=self.device, progress=self.progress_label(f"{split} nearest captions"))
            values[split] = np.clip(1.0 - cos[:, 0], 0.0, 2.0).astype(np.float32)
            j = idx[:, 0]
            out[split] = Dataset.from_dict({
                "id": list(queries.ids), "annotation": queries.index, "caption": queries.captions,
                "rareness": values[split], "nearest_id": [db.ids[i] for i in j],
                "nearest_annotation": db.index[j], "nearest_caption": [db.captions[i] for i in j],
            }, features=Features({"id": Value("string"), "annotation": Value("int32"), "caption": Value("string"),
                                  "rareness": Value("float32"), "nearest_id": Value("string"),
                                  "nearest_annotation": Value("int32"), "nearest_caption": Value("string")}))
            self.counters[f"{split}_annotations"] += len(j)
        save_dataset(out, folder)  # no evaluation split built: an empty folder with an empty summary
        summary = {split: {"count": int(len(v)), "mean": float(v.mean()), "median": float(np.median(v)),
                           "p95": float(np.quantile(v, 0.95)), "max": float(v.max())}
                   for split, v in values.items() if len(v)}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.plot and values and importlib.util.find_spec("matplotlib") is not None:
            plot_rareness(values, folder / "rareness.png")


def plot_rareness(values_by_split: dict[str, Sequence[float]], out_png: str | Path, bins: int = 50) -> Path:
    """Histogram of rareness per split into a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for split, v in values_by_split.items():
        v = np.asarray(v, np.float64)
        axes.hist(v, bins=bins, alpha=0.6, label=f"{split} (n={len(v)}, mean {v.mean():.3f})" if len(v) else split)
    axes.set(xlabel="rareness = 1 - max cosine to a training caption", ylabel="annotations")
    axes.legend()
    figure.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
