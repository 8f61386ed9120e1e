"""Text-motion retrieval metrics of a trained run on a split of a built dataset.

    python -m models evaluate retrieval --run runs/tmr --data built/humanml3d [--split test] [--json]

Samples are the reference loader's (`flatten_samples` with the dataset's length filters), each
with its whole frame range and its first caption, as TMR evaluates. Prints R@1/2/3/5/10 and median
rank for text->motion and motion->text under the "all" protocol (every text against every motion)
and the "batches of 32" protocol (averaged over the batches of a shuffle, the shuffle repeated
`--replications` times: mean and 95% interval; `models.eval.protocol.retrieval_protocol`). The
model, its statistics, text encoder and data options all come from the run folder.
`python -m models.retrieval.evaluate` is an alias kept for one release.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass


from datasets_build.core.flags import add_options, from_args, option
from datasets_build.text.encoders import TextEncoder
from models.base import checkpoint_path, config_from_dict
from models.eval.protocol import format_retrieval_table, retrieval_protocol
from models.retrieval.api import RetrievalEncoder, load, load_checkpoint
from models.training.config import run_command
from models.training.data import DataError, DataOptions, MotionDataset


@dataclass(frozen=True)
class EvalOptions:
    run: str = option(help="run folder written by `python -m models train retrieval`", metavar="RUN_DIR")
    data: str = option(help="build folder", metavar="BUILT_DIR")
    split: str = option("test", "split to evaluate")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")
    batch_size: int = option(32, "size of the small-batch protocol's batches", metavar="B", positive=True)
    replications: int = option(20, "shuffles of the small-batch protocol (mean and 95%% interval)", metavar="N",
                               positive=True)
    seed: int = option(0, "seed of the small-batch shuffles")
    json: bool = option(False, "print the metrics as JSON instead of a table")


def evaluate(run: str, data: str, split: str = "test", device: str | None = None, batch_size: int = 32,
             seed: int = 0, text_encoder: TextEncoder | None = None,
             encoder: RetrievalEncoder | None = None, replications: int = 20) -> dict[str, dict[str, float]]:
    """{"all": metrics, "batches of 32": metrics} (keys like "t2m/R@1", "m2t/MedR"; the batches'
    95% half-intervals under "t2m/R@1/ci95")."""
    encoder = encoder or load(run, device, text_encoder)
    options = config_from_dict(DataOptions, load_checkpoint(run)["data_options"], checkpoint_path(run))
    samples = MotionDataset(data, split, stats=None, options=options)
    if len(samples) < 2:
        raise DataError(f"split {split!r} of {data} has {len(samples)} samples after the length filters")
    texts = encoder.encode_text([samples.captions(i)[0] for i in range(len(samples))])
    motions = encoder.encode_motion([samples.raw_motion(i) for i in range(len(samples))])
    return retrieval_protocol(texts, motions, replications=replications, batch_size=batch_size, seed=seed)


def main(argv: list[str] | None = None, prog: str = "python -m models evaluate retrieval") -> int:
    """The evaluation command line (flags derived from EvalOptions)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_options(parser, EvalOptions)
    a = from_args(EvalOptions, parser.parse_args(argv))
    results = evaluate(a.run, a.data, a.split, a.device, a.batch_size, a.seed, replications=a.replications)
    print(json.dumps(results, indent=2) if a.json else format_retrieval_table(results))
    return 0


if __name__ == "__main__":  # the alias `python -m models.retrieval.evaluate`, kept for one release
    print("note: this command is now `python -m models evaluate retrieval` (same options)", file=sys.stderr)
    sys.exit(run_command(lambda argv: main(argv, prog="python -m models.retrieval.evaluate")))
