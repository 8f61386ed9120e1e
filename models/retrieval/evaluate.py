"""Text-motion retrieval metrics of a trained run on a split of a built dataset.

    python -m models.retrieval.evaluate --run runs/tmr --data built/humanml3d [--split test]

Samples are the reference loader's (`flatten_samples` with the dataset's length filters), each
with its whole frame range and its first caption, as TMR evaluates. Prints R@1/2/3/5/10 and median
rank for text->motion and motion->text under the "all" protocol (every text against every motion)
and the "batches of 32" protocol (averaged over a fixed shuffled split into batches of 32).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from models.training.data import DataOptions, MotionDataset
from models.eval.metrics import RECALL_KS, retrieval_all, retrieval_in_batches
from models.retrieval.api import RetrievalEncoder, load_checkpoint, load_retrieval_model
from datasets_build.text.encoders import TextEncoder


def evaluate(run: str, data: str, split: str = "test", device: str | None = None, batch_size: int = 32,
             seed: int = 0, text_encoder: TextEncoder | None = None,
             encoder: RetrievalEncoder | None = None) -> dict[str, dict[str, float]]:
    """{"all": metrics, "batches of 32": metrics} (keys like "t2m/R@1", "m2t/MedR")."""
    encoder = encoder or load_retrieval_model(run, device, text_encoder)
    options = DataOptions(**load_checkpoint(run)["data_options"])
    samples = MotionDataset(data, split, stats=None, options=options)
    if len(samples) < 2:
        raise ValueError(f"split {split!r} of {data} has {len(samples)} samples after the length filters")
    texts = encoder.encode_text([samples.captions(i)[0] for i in range(len(samples))])
    motions = encoder.encode_motion([samples.raw_motion(i) for i in range(len(samples))])
    results = {"all": retrieval_all(texts, motions)}
    if len(samples) >= batch_size:
        rng = np.random.default_rng(seed)
        results[f"batches of {batch_size}"] = retrieval_in_batches(texts, motions, batch_size, rng)
    return results


def format_table(results: dict[str, dict[str, Any]], count: int | None = None) -> str:
    head = ["protocol", "direction"] + [f"R@{k}" for k in RECALL_KS] + ["MedR"]
    rows = [head]
    for protocol, metrics in results.items():
        for direction in ("t2m", "m2t"):
            rows.append([protocol, direction] + [f"{metrics[f'{direction}/R@{k}']:.2f}" for k in RECALL_KS]
                        + [f"{metrics[f'{direction}/MedR']:.1f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + ([f"({count} samples)"] if count is not None else []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.retrieval.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder written by models.retrieval.train")
    p.add_argument("--data", required=True, help="build folder")
    p.add_argument("--split", default="test")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=32, help="size of the small-batch protocol's batches")
    p.add_argument("--seed", type=int, default=0, help="seed of the small-batch shuffle")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    a = p.parse_args(argv)
    results = evaluate(a.run, a.data, a.split, a.device, a.batch_size, a.seed)
    print(json.dumps(results, indent=2) if a.json else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
