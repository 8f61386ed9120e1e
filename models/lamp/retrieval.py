"""LaMP-Feat text-motion retrieval of a pretrained LaMP run (MODELS.md 5.6; LaMP Table 3).

    python -m models evaluate lamp --run runs/lamp --data built/humanml3d [--split test] [--json]

Every sample of the split (the reference loader's: length filters, sub-clips) with its whole frame range
(cut to a multiple of 4, at most 196 frames, zero-padded) and its first caption. Text feature:
text_proj([CLS]); motion feature: the query mean of motion_proj. LaMP's evaluation computes Euclidean
distances on these raw features (`--similarity euclidean`, the default); `--similarity cosine` uses the
trainer's unit-norm ones. Scores come from `models.eval.protocol.retrieval_protocol`: R@1/2/3/5/10 and
median rank, text->motion and motion->text, over all samples and in shuffled batches of 32 repeated 20
times (mean and 1.96 std / sqrt(20)), the batch protocol being LaMP's (and TMR's "guo").
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Literal

from datasets_build.core.flags import add_options, from_args, option
from models.eval.protocol import format_retrieval_table, retrieval_protocol
from models.lamp.api import LaMPEncoder, load
from models.training.data import DataError, DataOptions, MotionDataset, dataset_name


@dataclass(frozen=True)
class EvalOptions:
    run: str = option(help="run folder written by `python -m models train lamp`", metavar="RUN_DIR")
    data: str = option(help="build folder", metavar="BUILT_DIR")
    split: str = option("test", "split to evaluate")
    checkpoint: Literal["best", "last"] = option("best", "the best-validation checkpoint or the last one")
    similarity: Literal["euclidean", "cosine"] = option(
        "euclidean", "euclidean: raw features (LaMP's evaluation); cosine: unit-norm features (its trainer)")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")
    batch_size: int = option(32, "size of the small-batch protocol's batches", metavar="B", positive=True)
    replications: int = option(20, "shuffles of the small-batch protocol (mean and 95%% interval)", metavar="N",
                               positive=True)
    seed: int = option(0, "seed of the small-batch shuffles")
    json: bool = option(False, "print the metrics as JSON instead of a table")


def evaluate(run: str, data: str, split: str = "test", device: str | None = None, batch_size: int = 32,
             replications: int = 20, seed: int = 0, similarity: str = "euclidean", checkpoint: str = "best",
             encoder: LaMPEncoder | None = None) -> dict[str, dict[str, float]]:
    """{"all": metrics, "batches of 32": metrics with "<key>/ci95"} (keys "t2m/R@1", "m2t/MedR", ...)."""
    encoder = encoder or load(run, device, which=checkpoint, normalize=similarity == "cosine")
    samples = MotionDataset(data, split, stats=None, options=DataOptions.for_dataset(dataset_name(data)))
    if len(samples) < 2:
        raise DataError(f"split {split!r} of {data} has {len(samples)} samples after the length filters")
    texts = encoder.encode_text([samples.captions(i)[0] for i in range(len(samples))])
    motions = encoder.encode_motion([samples.raw_motion(i) for i in range(len(samples))])
    return retrieval_protocol(texts, motions, replications=replications, batch_size=batch_size, seed=seed,
                              similarity=similarity)


def main(argv: list[str] | None = None, prog: str = "python -m models evaluate lamp") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_options(parser, EvalOptions)
    a = from_args(EvalOptions, parser.parse_args(argv))
    results = evaluate(a.run, a.data, a.split, a.device, a.batch_size, a.replications, a.seed, a.similarity,
                       a.checkpoint)
    print(json.dumps(results, indent=2) if a.json else format_retrieval_table(results))
    return 0


__all__ = ["EvalOptions", "evaluate", "main"]
