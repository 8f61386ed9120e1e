"""Caption motions with a LaMP-M2T run, score the captions, and LaMP-BertScore for any generator
(MODELS.md 5.4, 5.5).

    python -m models caption --run runs/m2t --data built/humanml3d [--split test] [--out captions.jsonl]
        [--bertscore-model DIR] [--evaluator DIR] [--limit N] [--batch-size B] [--device cuda|cpu]

writes one JSON line per sample of the split ({"name", "caption", "references"}) and prints (and writes to
`<out>.metrics.json`) BLEU@1, BLEU@4, ROUGE-L, CIDEr (x100, MotionGPT's tables) against every reference
caption of the sample, BertScore F1 (x100) with `--bertscore-model` (a local roberta-large folder for the
paper's setting), and R-precision / MM-Dist of the captions against their motions with `--evaluator DIR`
(Guo's evaluator; skipped with a sentence when spaCy's English pipeline is missing). Each motion is its
first 196 frames (LaMP's window), cut to a multiple of 4.

    captioner = load_captioner("runs/m2t")
    captioner.caption([raw_motion, ...])                               # one string per [T, D] raw motion
    lamp_bertscore(generator, captions, lengths, captioner, setup)     # LaMP-BertScore of a generator
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from datasets_build.core.flags import add_options, option, values_for
from models import base
from models.base import pick_device
from models.eval.captioning import BertScoreSetup, bertscore_f1, bertscore_setup, caption_metrics
from models.lamp.api import pad_motions
from models.lamp.m2t import LaMPM2T
from models.lamp.m2t_train import FORMAT, rebuild
from models.training.config import run_command
from models.training.data import MotionDataset


class Captioner:
    """caption(raw motions [T_i, D]) -> one caption each, batched."""

    def __init__(self, model: LaMPM2T, device: torch.device, batch_size: int = 32) -> None:
        self.model, self.device, self.batch_size = model.to(device).eval(), device, batch_size
        self.stats = model.lamp.vq.stats

    @torch.no_grad()
    def caption(self, motions: Sequence[np.ndarray]) -> list[str]:
        out: list[str] = []
        frames = self.model.lamp.cfg.max_motion_length
        for lo in range(0, len(motions), self.batch_size):
            x = torch.from_numpy(pad_motions(motions[lo:lo + self.batch_size], self.stats, frames)).to(self.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                out.extend(self.model.generate(x))
        return out


def load_captioner(run_dir: str | os.PathLike, device: str | torch.device | None = None, lm: str | None = None,
                   batch_size: int = 32) -> Captioner:
    """The captioner of a LaMP-M2T run (its LM from the recorded folder unless `lm` is given)."""
    device = pick_device(device)
    state = base.load_checkpoint(run_dir, FORMAT)
    model, _ = rebuild(state, base.checkpoint_path(run_dir), device, lm)
    return Captioner(model, device, batch_size)


def lamp_bertscore(generator: Any, captions: Sequence[str], lengths: Sequence[int], captioner: Captioner,
                   setup: BertScoreSetup, seed: int = 0) -> dict[str, Any]:
    """LaMP-BertScore (paper 3.4): generate a motion per caption, caption it with LaMP-M2T, BertScore F1 (x100)
    of that caption against the given one. Returns the mean, the per-caption values and the captions."""
    motions = generator.generate(list(captions), list(lengths), seed)
    predicted = captioner.caption(motions)
    f1 = bertscore_f1(predicted, list(captions), setup) * 100.0
    return {"lamp_bertscore": float(np.mean(f1)), "per_caption": f1.tolist(), "captions": predicted,
            "note": setup.note}


def evaluate_bertscore(generator: Any, test: Any, m2t_run: str | os.PathLike, bertscore_model: str | os.PathLike,
                       device: str | torch.device | None = None, seed: int = 0, batch_size: int = 32) -> dict[str, Any]:
    """The LaMP-BertScore column of `python -m models evaluate ... --bertscore M2T_RUN --bertscore-model DIR`:
    one seeded caption per sample of the protocol's EvaluationSet `test` (its `captions`, and its fixed
    `real_lengths` crops as the lengths), generated, captioned, BertScore F1 x100 against that caption (the
    paper's settings when the folder is roberta-large: layer 17, idf, baseline rescaling). The paper's Ground
    Truth row is fixed at 100 rather than computed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20]))
    captions = [caps[int(rng.integers(len(caps)))] for caps in test.captions]
    lengths = [int(n) for n in test.real_lengths]
    captioner = load_captioner(m2t_run, device, batch_size=batch_size)
    return lamp_bertscore(generator, captions, lengths, captioner, bertscore_setup(bertscore_model), seed)


# ----------------------------------------------------------------------------- the caption command
@dataclasses.dataclass
class CaptionOptions:
    run: str = option(help="a LaMP-M2T run folder (`python -m models train lamp-m2t`)", metavar="RUN")
    data: str = option(help="build folder whose motions to caption", metavar="BUILT_DIR")
    split: str = option("test", "split to caption")
    out: str = option("captions.jsonl", "captions file (metrics go to <out minus .jsonl>.metrics.json)", metavar="PATH")
    lm: str | None = option(None, "the LM folder, when it moved since training (default: the run's record)",
                            metavar="DIR")
    bertscore_model: str | None = option(None, "local BertScore model folder (paper: roberta-large)", metavar="DIR")
    evaluator: str | None = option(None, "Guo evaluator folder: R-precision and MM-Dist of the captions against the "
                                         "motions (needs spaCy's en_core_web_sm for POS tags)", metavar="DIR")
    glove: str | None = option(None, "GloVe our_vab folder when it is not inside the evaluator folder", metavar="DIR")
    limit: int | None = option(None, "caption only the first N samples", metavar="N", positive=True)
    batch_size: int = option(32, "motions per generate() call", metavar="B", positive=True)
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")


def caption_split(captioner: Captioner, data: str, split: str, limit: int | None = None
                  ) -> tuple[list[str], list[str], list[list[str]], list[np.ndarray]]:
    """(names, predicted captions, reference captions, raw motions) of a build's split."""
    dataset = MotionDataset(data, split, stats=None)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    names = [dataset.name(i) for i in range(count)]
    references = [dataset.captions(i) for i in range(count)]
    motions = [np.asarray(dataset.raw_motion(i)) for i in range(count)]
    return names, captioner.caption(motions), references, motions


def main(argv: list[str] | None = None, prog: str = "python -m models caption") -> int:
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False, description=__doc__.split("\n\n")[0])
    add_options(parser, CaptionOptions)
    opts = CaptionOptions(**values_for(CaptionOptions, parser.parse_args(argv)))
    captioner = load_captioner(opts.run, opts.device, opts.lm, opts.batch_size)
    names, predicted, references, motions = caption_split(captioner, opts.data, opts.split, opts.limit)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for name, caption, refs in zip(names, predicted, references):
            f.write(json.dumps({"name": name, "caption": caption, "references": refs}) + "\n")
    metrics: dict[str, Any] = {k: 100.0 * v for k, v in caption_metrics(predicted, references).items()}
    if opts.bertscore_model:
        setup = bertscore_setup(opts.bertscore_model)
        metrics["bertscore_f1"] = float(np.mean(bertscore_f1(predicted, references, setup)) * 100.0)
        metrics["bertscore_note"] = setup.note
    if opts.evaluator:
        from models.eval.captioning import caption_matching
        from models.eval.evaluator import load_evaluator

        matching = caption_matching(predicted, motions, load_evaluator(opts.evaluator, opts.glove, captioner.device))
        if isinstance(matching, str):
            metrics["caption_matching_note"] = matching
            print(matching, file=sys.stderr)
        else:
            metrics.update(matching)
    metrics["samples"] = len(predicted)
    metrics_path = out.with_name(out.name.removesuffix(".jsonl") + ".metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"captioned {len(predicted)} samples of {opts.data} [{opts.split}] into {out}")
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"  {key:14s} {value:8.3f}")
    if "bertscore_note" in metrics:
        print(f"  ({metrics['bertscore_note']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
