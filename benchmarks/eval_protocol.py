"""The generation protocol's wall time: models.eval.protocol vs the reference code's straightforward loop.

    .venv/bin/python benchmarks/eval_protocol.py [--motions 200] [--replications 20] [--workdir DIR]
        [--evaluator DIR] [--mm-captions N]

Builds a procedural sample release (`--motions` base motions + mirrors; 200 gives 164 test samples),
trains a tiny evaluator on it (`python -m models train evaluator --preset tiny`; `--evaluator DIR`
uses another), and scores the papers' two rows, "Real motions" and a tiny generator (a nearest-caption
lookup in the training split, cropped to the ground-truth length, see `NearestCaption`), with
- ours: `EvaluationSet` (every test caption's text embedding and the real motions' embeddings,
  once) + `evaluate_generation` (per replication: the draw, the generator, its motion embeddings);
- the reference loop, written plainly as the reference evaluation code runs it [code: text-to-motion
  final_evaluations.py / motion_loaders, MotionDiffuse tools/evaluation.py]: every replication
  re-vectorises each item's caption tokens, re-normalises and re-embeds the ground truth in batches
  of 32 (its matching pass) and again for FID's statistics, then the generator's batches of 32 with
  their captions, and MultiModality one caption (30 motions) at a time.
Both use the same draws (captions, crops, batches, pairs), so the numbers must agree: the script
prints both tables, the largest difference and the times. `--workdir` keeps the build and the
evaluator for the next run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets_build import BuildConfig, build  # noqa: E402
from datasets_build.synthetic.sample_release import write_sample_release  # noqa: E402
from models.eval.evaluator import Evaluator, caption_tokens, load_evaluator  # noqa: E402
from models.eval.metrics import diversity, diversity_times, fid, mean_interval, multimodality, r_precision  # noqa: E402
from models.eval.protocol import (  # noqa: E402
    GENERATION_METRICS, EvaluationSet, GenerationReport, GroundTruth, ProtocolOptions, evaluate_generation,
    format_generation_table,
)
from models.eval.train import PRESETS, TrainConfig, train  # noqa: E402
from models.training.data import DataOptions, MotionDataset  # noqa: E402


class NearestCaption:
    """A tiny generator: the training sample whose caption shares most words with the query (a
    random one of the 5 best, by seed), its motion cropped (or linearly stretched) to the asked length."""

    def __init__(self, data: Path, split: str = "train") -> None:
        samples = MotionDataset(data, split, stats=None, options=DataOptions.for_dataset("humanml3d"))
        captions = [(i, c) for i in range(len(samples)) for c in samples.captions(i)]
        self.vocab = {w: k for k, w in enumerate(sorted({w for _, c in captions for w in c.lower().split()}))}
        self.bags = np.stack([self._bag(c) for _, c in captions])  # [captions, vocab]
        self.owner = np.array([i for i, _ in captions])
        self.motions = [np.asarray(samples.raw_motion(i), np.float32) for i in range(len(samples))]
        self.cache: dict[str, np.ndarray] = {}

    def _bag(self, caption: str) -> np.ndarray:
        bag = np.zeros(len(self.vocab), np.float32)
        for w in caption.lower().split():
            if w in self.vocab:
                bag[self.vocab[w]] = 1.0
        return bag

    def generate(self, captions: Sequence[str], lengths: Sequence[int], seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        out = []
        for caption, length in zip(captions, lengths):
            if caption not in self.cache:
                self.cache[caption] = np.argsort(-(self.bags @ self._bag(caption)), kind="stable")[:5]
            motion = self.motions[self.owner[self.cache[caption][rng.integers(5)]]]
            if len(motion) >= length:
                start = int(rng.integers(len(motion) - length + 1))
                out.append(motion[start:start + length])
            else:  # stretch in time
                t = np.linspace(0, len(motion) - 1, length)
                lo = np.floor(t).astype(int)
                hi, w = np.minimum(lo + 1, len(motion) - 1), (t - lo)[:, None]
                out.append(((1 - w) * motion[lo] + w * motion[hi]).astype(np.float32))
        return out


# ----------------------------------------------------------------------------- the reference loop
def _items(test: EvaluationSet, evaluator: Evaluator, idx: np.ndarray, captions: np.ndarray,
           motions: list[np.ndarray]) -> list[tuple]:
    """The reference dataset's __getitem__ per item: tokens -> word vectors and POS one-hots one by
    one, the motion z-normalised and zero-padded to 196."""
    cfg, items = evaluator.cfg, []
    for i, caption, motion in zip(idx, captions, motions):
        tokens = test.samples.word_tokens(int(i))[caption] or caption_tokens(test.captions[i][caption])
        words, pos, cap_len = evaluator.vectorizer.encode(tokens, cfg.max_text_len)
        padded = np.zeros((cfg.max_motion_length, cfg.dim_pose), np.float32)
        padded[:len(motion)] = (motion - evaluator.stats.mean) / evaluator.stats.std
        items.append((words, pos, cap_len, padded, len(motion)))
    return items


def _co_embed(evaluator: Evaluator, items: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """collate_fn (sort by cap_len, descending) + the wrapper's get_co_embeddings; returns the
    embeddings and, to compare with ours, the batch positions they belong to."""
    order = sorted(range(len(items)), key=lambda k: items[k][2], reverse=True)
    batch = [items[k] for k in order]
    with torch.no_grad():
        m_lens = torch.tensor([b[4] for b in batch])
        text, motion = evaluator.matcher.co_embed(torch.from_numpy(np.stack([b[0] for b in batch])),
                                                  torch.from_numpy(np.stack([b[1] for b in batch])),
                                                  torch.tensor([b[2] for b in batch]),
                                                  torch.from_numpy(np.stack([b[3] for b in batch])), m_lens)
    align = np.argsort(m_lens.numpy(), kind="stable")[::-1]
    return text.numpy(), motion.numpy(), np.asarray(order)[align]


def reference_loop(test: EvaluationSet, generators: dict, options: ProtocolOptions) -> dict[str, dict]:
    evaluator, b = test.evaluator, options.batch_size
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in generators}
    for r in range(options.replications):
        draw = test.draw(r, options)
        idx = draw.order
        # FID's ground-truth statistics: a pass over the (fixed) real crops, every replication
        real = test.crops(np.arange(len(test)), test.real_starts, test.real_lengths)
        real_items = _items(test, evaluator, np.arange(len(test)), np.zeros(len(test), int), real)
        real_emb = np.concatenate([_co_embed(evaluator, real_items[lo:lo + b])[1] for lo in range(0, len(real), b)])
        for name, generator in generators.items():
            text_parts, motion_parts, where = [], [], []
            for lo in range(0, len(idx), b):
                chunk = idx[lo:lo + b]
                if isinstance(generator, GroundTruth):
                    motions = test.crops(chunk, draw.start, draw.length)
                else:
                    motions = generator.generate(test.chosen_captions(chunk, draw),
                                                 [int(x) for x in draw.length[chunk]], draw.seed + lo // b)
                t, m, pos = _co_embed(evaluator, _items(test, evaluator, chunk, draw.caption[chunk], motions))
                text_parts.append(t), motion_parts.append(m), where.append(lo + pos)
            where = np.concatenate(where)
            text, motion = np.empty((len(idx), evaluator.dim)), np.empty((len(idx), evaluator.dim))
            text[where], motion[where] = np.concatenate(text_parts), np.concatenate(motion_parts)
            top, mm_dist = r_precision(text, motion, b)
            scores = {"R@1": top[0], "R@2": top[1], "R@3": top[2], "MM-Dist": mm_dist, "FID": fid(real_emb, motion),
                      "Diversity": diversity(motion, diversity_times(len(motion), options.diversity_times),
                                             draw.pairs_rng(1))}
            if not isinstance(generator, GroundTruth) and len(draw.mm):
                g, emb = options.mm_generations, []
                for k, i in enumerate(draw.mm):  # one caption's 30 generations per batch
                    caption, length = test.captions[i][draw.caption[i]], int(draw.length[i])
                    motions = generator.generate([caption] * g, [length] * g, draw.seed + 7919 + k)
                    batch = np.stack([np.pad((m - evaluator.stats.mean) / evaluator.stats.std,
                                             ((0, evaluator.cfg.max_motion_length - len(m)), (0, 0))) for m in motions])
                    with torch.no_grad():
                        emb.append(evaluator.matcher.encode_motion(torch.from_numpy(batch.astype(np.float32)),
                                                                   torch.full((g,), length)).numpy())
                scores["MultiModality"] = multimodality(np.stack(emb), options.mm_pairs, draw.pairs_rng(2))
            runs[name].append({k: float(v) for k, v in scores.items()})
    return {name: {k: mean_interval([run[k] for run in rows]) for k in GENERATION_METRICS if k in rows[0]}
            for name, rows in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--motions", type=int, default=200)
    parser.add_argument("--replications", type=int, default=20)
    parser.add_argument("--mm-captions", type=int, default=None, help="default: the remodiffuse preset's 100")
    parser.add_argument("--evaluator", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="eval-protocol-"))
    data = work / f"sample-{args.motions}"
    if not (data / "build.json").is_file():
        root = write_sample_release(work / f"release-{args.motions}", "humanml3d", args.motions, seed=0)
        build(BuildConfig(recipe="humanml3d", dataset="humanml3d", source=root, out=data, progress=False, num_proc=1))
    evaluator_dir = args.evaluator or work / f"evaluator-tiny-{args.motions}"
    if not (evaluator_dir / "text_mot_match" / "model" / "finest.tar").is_file():
        started = time.perf_counter()
        train(TrainConfig(data=str(data), out=str(evaluator_dir), progress=False, preset="tiny",
                          model=PRESETS["tiny"].model, **PRESETS["tiny"].train))
        print(f"trained a tiny evaluator in {time.perf_counter() - started:.1f} s")
    evaluator = load_evaluator(evaluator_dir, device="cpu")
    generators = {"Real motions": GroundTruth(), "nearest caption": NearestCaption(data)}
    options = ProtocolOptions(replications=args.replications, mm_captions=args.mm_captions)

    started = time.perf_counter()
    test = EvaluationSet(data, evaluator, "test")
    setup = time.perf_counter() - started
    report = evaluate_generation(generators, test, options)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    reference = reference_loop(test, generators, options)
    theirs = time.perf_counter() - started

    print(format_generation_table(report))
    print("\nreference loop:")
    print(format_generation_table(GenerationReport(reference, {}, report.info)).split("\n\n")[0])
    worst = max(abs(report.results[n][k][i] - reference[n][k][i])
                for n in reference for k in reference[n] for i in (0, 1))
    print(f"\nlargest difference between the two: {worst:.2e}")
    print(f"{len(test)} test samples, {options.replications} replications, {len(generators)} rows, "
          f"{report.info['mm_captions']} x {options.mm_generations} MultiModality generations per replication")
    print(f"ours:      {ours:7.2f} s  ({setup:.2f} s embedding captions and real motions once)")
    print(f"reference: {theirs:7.2f} s")
    print(f"speed-up:  {theirs / ours:7.2f}x")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
