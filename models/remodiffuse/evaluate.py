"""Evaluate a ReMoDiffuse run: the standard table plus the paper's generalisation figures (Table 6).

    python -m models evaluate remodiffuse --run RUN --data BUILT --evaluator DIR [--split test]
        [--replications 20] [--mixture auto|code|paper] [--database FILE] [--json OUT.json]

Per replication, the standard protocol (models.eval.protocol) scores the generated motions; the same
motions (generated once: a replication's calls are remembered) also give each sample's MM distance
||text_emb - motion_emb||, aggregated over the build's caption rareness (`rareness/<split>`,
r = 1 - max cosine to a training caption): tail 5% MM = mean over the rarest 5% of the evaluated
samples, balanced MM = mean over 100 equal-width rareness bins of the per-bin mean (empty bins skipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from datasets_build.core.errors import UserError
from datasets_build.core.flags import add_options, from_args, option
from models.eval.metrics import balanced_mean, diversity_times, mean_interval, tail_mean
from models.eval.protocol import (
    GENERATION_METRICS, EvaluationSet, GenerationReport, ProtocolOptions, format_generation_table, score_replication,
)

GENERALISATION = ("MM-Dist", "tail 5% MM-Dist", "balanced MM-Dist")


class RarenessMissing(UserError, ValueError):
    """A build without caption rareness for the evaluated split."""


def read_rareness(data: str | Path, split: str) -> dict[str, float]:
    """`<id>#<annotation>` -> rareness of the build's `rareness/<split>`."""
    import datasets

    folder = Path(data) / "rareness" / split
    try:
        table = datasets.load_from_disk(str(folder))
    except FileNotFoundError:
        raise RarenessMissing(f"{data} has no rareness for split {split!r}: build it with `python -m datasets_build "
                              "remodiffuse` (rareness covers the val and test splits)") from None
    return {f"{i}#{a}": float(r) for i, a, r in zip(table["id"], table["annotation"], table["rareness"])}


class RememberingGenerator:
    """Serves a repeated generate() call (same captions, lengths, seed) from memory."""

    def __init__(self, generator) -> None:
        self.generator, self.memory = generator, {}

    def generate(self, captions, lengths, seed):
        key = (tuple(captions), tuple(int(n) for n in lengths), int(seed))
        if key not in self.memory:
            self.memory[key] = self.generator.generate(captions, lengths, seed)
        return self.memory[key]


def sample_rareness(test: EvaluationSet, indices: np.ndarray, caption: np.ndarray,
                    table: dict[str, float]) -> np.ndarray:
    """The rareness of each evaluated sample's chosen caption."""
    out = []
    for i in indices:
        s = test.samples
        key = f"{s.arrow.motion_id(int(s.rows[i]))}#{int(s.ann_index[s.ann_ptr[i] + caption[i]])}"
        if key not in table:
            raise RarenessMissing(f"{test.data}: no rareness for annotation {key}; rebuild with the remodiffuse recipe")
        out.append(table[key])
    return np.asarray(out)


def generalisation_scores(generator: RememberingGenerator, test: EvaluationSet, draw, options: ProtocolOptions,
                          rareness: dict[str, float], fraction: float, bins: int) -> dict[str, float]:
    """Tail and balanced MM-Dist of one replication's motions (the ones the standard scores used)."""
    idx, chunk = draw.order, options.generation_batch
    captions, lengths = test.chosen_captions(idx, draw), draw.length[idx]
    motions = [m for k, lo in enumerate(range(0, len(idx), chunk))
               for m in generator.generate(captions[lo:lo + chunk], lengths[lo:lo + chunk], draw.seed + k)]
    distance = np.linalg.norm(test.text_embeddings(idx, draw) - test.evaluator.embed_motions(motions), axis=1)
    r = sample_rareness(test, idx, draw.caption, rareness)
    return {"tail 5% MM-Dist": tail_mean(distance, r, fraction), "balanced MM-Dist": balanced_mean(distance, r, bins)}


@dataclass(frozen=True)
class EvaluateOptions:
    run: str = option(help="a ReMoDiffuse run folder", metavar="RUN")
    data: str = option(help="build folder (a remodiffuse build: its rareness/ folder)", metavar="BUILT_DIR")
    evaluator: str = option(help="evaluator folder or `python -m models train evaluator` run", metavar="DIR_OR_RUN")
    split: str = option("test", "split to evaluate (rareness exists for val and test)")
    replications: int = option(20, "repetitions of the whole evaluation", metavar="N", positive=True)
    mixture: Literal["auto", "code", "paper"] = option("auto", "condition mixture: the code's schedule, the tuned "
                                                               "one of RUN/mixture.json, or auto (tuned when saved)")
    database: str | None = option(None, "a reference retrieval database (.npz) instead of the run's build",
                                  metavar="FILE")
    tail_fraction: float = option(0.05, "the rarest fraction of prompts for the tail MM-Dist")
    bins: int = option(100, "rareness bins of the balanced MM-Dist", positive=True)
    mm_captions: int | None = option(None, "MultiModality captions (default: ReMoDiffuse's 100 / 50)", metavar="N")
    glove: str | None = option(None, "GloVe our_vab folder when it is not inside the evaluator folder", metavar="DIR")
    seed: int = option(0, "seed of the replications' draws and of generation")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")
    json: str | None = option(None, "also write every number as JSON", metavar="OUT.json")


def format_generalisation(name: str, results: dict[str, tuple[float, float]]) -> str:
    head = ["Method", "MM↓", "tail 5% MM↓", "balanced MM↓"]
    row = [name] + [f"{results[k][0]:.3f}±{results[k][1]:.3f}" for k in GENERALISATION]
    widths = [max(len(a), len(b)) for a, b in zip(head, row)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in (head, row))


def main(argv: list[str] | None = None, prog: str = "python -m models evaluate remodiffuse") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_options(parser, EvaluateOptions)
    a = from_args(EvaluateOptions, parser.parse_args(argv))
    from models.base import pick_device
    from models.eval.evaluator import load_evaluator
    from models.remodiffuse.api import load

    device = pick_device(a.device)
    rareness = read_rareness(a.data, a.split)
    generator = RememberingGenerator(load(a.run, device, database=a.database, mixture=a.mixture))
    evaluator = load_evaluator(a.evaluator, a.glove, device)
    started = time.perf_counter()
    test = EvaluationSet(a.data, evaluator, a.split, a.seed)
    options = ProtocolOptions(replications=a.replications, paper="remodiffuse", mm_captions=a.mm_captions, seed=a.seed)
    name, runs = Path(a.run).name, []
    for r in range(a.replications):
        draw = test.draw(r, options)
        scores = score_replication(generator, test, draw, options, name)
        scores.update(generalisation_scores(generator, test, draw, options, rareness, a.tail_fraction, a.bins))
        runs.append(scores)
        generator.memory.clear()
        print(f"replication {r + 1}/{a.replications}", file=sys.stderr)
    keys = [k for k in (*GENERATION_METRICS, *GENERALISATION[1:]) if k in runs[0]]
    results = {k: mean_interval([run[k] for run in runs]) for k in keys}
    n = len(test)
    info = {"data": test.data, "split": test.split, "dataset": test.dataset, "samples": n,
            "evaluated_per_replication": n // options.batch_size * options.batch_size,
            "captions": int(test.ann_ptr[-1]), "captions_without_tokens": test.untagged,
            "diversity_pairs": diversity_times(n // options.batch_size * options.batch_size, options.diversity_times),
            "mm_captions": min(options.mm_count(test.dataset), n), "options": asdict(options),
            "evaluator": evaluator.record, "evaluator_summary": evaluator.describe(),
            "setup_seconds": round(test.setup_seconds, 3), "seconds": round(time.perf_counter() - started, 3)}
    report = GenerationReport({name: {k: v for k, v in results.items() if k in GENERATION_METRICS}},
                              {name: runs}, info)
    print(format_generation_table(report))
    print()
    print(f"Generalisation (paper Table 6; rareness of {a.data}/rareness/{a.split}):")
    print(format_generalisation(name, results))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"run": a.run, **report.to_json(),
                                            "generalisation": {k: {"mean": results[k][0], "ci95": results[k][1]}
                                                               for k in GENERALISATION}}, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    from models.training.config import run_command

    sys.exit(run_command(main))
