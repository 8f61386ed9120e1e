"""The evaluation protocols of the papers' tables, for any generator and any text-motion model.

Generation (Guo et al.'s protocol, ../shared/docs/MODELS.md 1.4) for any object with
`generate(captions, lengths, seed) -> list of [length, D] arrays` in RAW feature space (the
protocol normalises them with the evaluator's own statistics, so every generator is scored the same
way whatever its own normalisation); `GroundTruth()` is the "Real motions" row:

    evaluator = load_evaluator("checkpoints/t2m")
    test = EvaluationSet("built/humanml3d", evaluator)                 # text + real embeddings: once
    report = evaluate_generation({"Real motions": GroundTruth(), "mine": generator}, test)
    print(format_generation_table(report))

Per replication (`replications`, default 20) every test sample gets a random caption and a random
crop (multiples of 4, one unit shorter with probability 1/3: the reference loader's draw); the
samples are shuffled and cut into batches of 32 (a partial batch is dropped); the generator makes
one motion per (caption, ground-truth length). Scores: R-precision top 1/2/3 and MM-Dist inside each
batch, FID against the real test embeddings, Diversity over 300 random pairs, MultiModality over
`mm_generations` (30) generations of `mm_captions` captions (100 / 50 / 96 by paper preset), 10
pairs each. Each metric is reported as mean and 95% half-interval 1.96 std / sqrt(replications).

What is computed once per run rather than once per replication (the reference code recomputes
them every time): the text embedding of every test caption (a replication only picks among them)
and the real motions' embeddings, one seeded crop of every test sample (FID's reference set). The
"Real motions" row still re-crops the test motions in every replication and scores them like a
generator's output, which is why its FID is not 0, as in the papers.

Retrieval (`retrieval_protocol`, TMR's and LaMP's): "all" (every text against every motion) and
batches of 32 repeated over `replications` shuffles with intervals, text->motion and motion->text,
R@1/2/3/5/10 and median rank.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence

import numpy as np

from datasets_build.core.errors import UserError
from datasets_build.motion.specs import SPECS
from models.eval.evaluator import Evaluator, caption_tokens
from models.eval.metrics import (
    RECALL_KS, Similarity, diversity, diversity_times, fid, mean_interval, multimodality, r_precision, retrieval_all,
    retrieval_in_batches,
)
from models.training.data import DataOptions, MotionDataset, dataset_name

GENERATION_METRICS = ("R@1", "R@2", "R@3", "FID", "MM-Dist", "Diversity", "MultiModality")
# MultiModality caption counts of the papers' evaluation code [code: MotionDiffuse tools/evaluation.py,
# ReMoDiffuse configs/_base_/datasets/*, momask utils/eval_t2m.py (3 batches of 32), LaMP (MoMask's)]
PAPER_PRESETS: dict[str, dict[str, int]] = {
    "motiondiffuse": {"humanml3d": 100, "kitml": 100},
    "remodiffuse": {"humanml3d": 100, "kitml": 50},
    "momask": {"humanml3d": 96, "kitml": 96},
    "lamp": {"humanml3d": 96, "kitml": 96},
}
PaperPreset = Literal["motiondiffuse", "remodiffuse", "momask", "lamp"]


class ProtocolError(UserError, ValueError):
    """Data or a generator's output that the protocol cannot score."""


class GenerationError(UserError, ValueError):
    """A generation request the model cannot serve (lengths, text encoder)."""


def generation_request(captions: Sequence[str], lengths: Sequence[int], limit: int,
                       error: type[Exception] = GenerationError) -> tuple[list[str], list[int]]:
    """(captions, lengths) of a `generate` call as lists, checked: one length per caption, each in
    [1, limit] frames; otherwise `error` (the package's own class) in one sentence."""
    captions, lengths = list(captions), [int(n) for n in lengths]
    if len(captions) != len(lengths):
        raise error(f"{len(captions)} captions and {len(lengths)} lengths")
    if any(n < 1 or n > limit for n in lengths):
        raise error(f"lengths must lie in [1, {limit}] frames, got {min(lengths)}..{max(lengths)}")
    return captions, lengths


class Generator(Protocol):
    def generate(self, captions: Sequence[str], lengths: Sequence[int], seed: int) -> list[np.ndarray]:
        """One raw-feature motion [lengths[i], D] per caption; `seed` makes the call repeatable."""
        ...


class GroundTruth:
    """The papers' "Real motions" row: the test motions (this replication's crops) as the output."""

    name = "Real motions"


@dataclass(frozen=True)
class ProtocolOptions:
    replications: int = 20
    batch_size: int = 32  # R-precision batches (and the shuffled loader's drop_last)
    diversity_times: int = 300
    paper: PaperPreset = "remodiffuse"  # which paper's MultiModality caption count
    mm_captions: int | None = None  # None: the paper preset's count for the dataset
    mm_generations: int = 30
    mm_pairs: int = 10
    generation_batch: int = 32  # captions per generate() call (the reference's batch)
    seed: int = 0

    def mm_count(self, dataset: str) -> int:
        return self.mm_captions if self.mm_captions is not None else PAPER_PRESETS[self.paper][dataset]


@dataclass
class Draw:
    """One replication's random choices: caption and crop per test sample, the evaluated order."""

    order: np.ndarray  # [M] sample indices, shuffled, M = full batches only
    caption: np.ndarray  # [N] position of the chosen caption in the sample's captions
    start: np.ndarray  # [N] crop start
    length: np.ndarray  # [N] crop length (the "ground-truth length" generators get)
    mm: np.ndarray  # [K] sample indices whose caption gets mm_generations generations
    seed: int  # the generator's seed; also seeds the diversity / multimodality pairs (the same for all)

    def pairs_rng(self, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, purpose])


# ----------------------------------------------------------------------------- the test set, embedded once
class EvaluationSet:
    """A split's samples (the reference loader's: length filters, sub-clips) with the text
    embedding of every caption and the real motions' embeddings, both computed once."""

    def __init__(self, data: str | Path, evaluator: Evaluator, split: str = "test", seed: int = 0) -> None:
        self.data, self.split, self.evaluator = str(data), split, evaluator
        self.dataset = dataset_name(data)
        if SPECS[self.dataset].feature_dim != evaluator.cfg.dim_pose:
            raise ProtocolError(f"the evaluator takes {evaluator.cfg.dim_pose}-d motions but {data} holds "
                                f"{SPECS[self.dataset].feature_dim}-d {SPECS[self.dataset].title} motions")
        self.options = DataOptions.for_dataset(self.dataset)
        self.samples = MotionDataset(data, split, stats=None, options=self.options)
        n = len(self.samples)
        if n < 2:
            raise ProtocolError(f"split {split!r} of {data} has {n} samples after the length filters")
        self.captions = [self.samples.captions(i) for i in range(n)]
        tokens = [self.samples.word_tokens(i) for i in range(n)]
        self.untagged = sum(1 for per in tokens for t in per if not t)  # captions without word/POS tokens
        flat = [t or caption_tokens(c) for caps, per in zip(self.captions, tokens) for c, t in zip(caps, per)]
        self.ann_ptr = np.r_[0, np.cumsum([len(c) for c in self.captions])].astype(np.int64)
        self.lengths = np.array([self.samples.ends[i] - self.samples.starts[i] for i in range(n)], np.int64)
        started = time.perf_counter()
        if hasattr(evaluator, "embed_captions"):  # an evaluator that reads raw captions (LaMP features)
            self.text_emb = evaluator.embed_captions([c for caps in self.captions for c in caps])
        else:
            self.text_emb = evaluator.embed_texts(flat)  # [captions, d]
        # FID's reference set: one seeded crop of every sample (the same in every replication)
        real_rng = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 1]))
        self.real_starts, self.real_lengths = self.draw_crops(real_rng)
        self.real_emb = evaluator.embed_motions(self.crops(np.arange(n), self.real_starts, self.real_lengths))
        self.setup_seconds = time.perf_counter() - started

    def __len__(self) -> int:
        return len(self.samples)

    def draw_crops(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) per sample: the reference loader's crop (DataOptions.crop_length)."""
        prng = random.Random(int(rng.integers(2**63)))
        lengths = np.array([self.options.crop_length(int(t), prng) for t in self.lengths], np.int64)
        starts = np.array([prng.randint(0, int(t - c)) for t, c in zip(self.lengths, lengths)], np.int64)
        return starts, lengths

    def crops(self, indices: Sequence[int], starts: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """The raw crops of the samples `indices` (starts/lengths indexed by sample)."""
        return [np.asarray(self.samples.raw_motion(int(i))[starts[i]:starts[i] + lengths[i]], np.float32)
                for i in indices]

    def draw(self, replication: int, options: ProtocolOptions) -> Draw:
        """The random choices of one replication (the same for every generator scored in it)."""
        rng = np.random.default_rng(np.random.SeedSequence([options.seed, replication]))
        n = len(self)
        caption = np.array([rng.integers(self.ann_ptr[i + 1] - self.ann_ptr[i]) for i in range(n)], np.int64)
        starts, lengths = self.draw_crops(rng)
        order = rng.permutation(n)[: n // options.batch_size * options.batch_size]
        mm = np.sort(rng.choice(n, min(options.mm_count(self.dataset), n), replace=False))
        return Draw(order, caption, starts, lengths, mm, int(rng.integers(2**31)))

    def text_embeddings(self, indices: np.ndarray, draw: Draw) -> np.ndarray:
        return self.text_emb[self.ann_ptr[indices] + draw.caption[indices]]

    def chosen_captions(self, indices: np.ndarray, draw: Draw) -> list[str]:
        return [self.captions[i][draw.caption[i]] for i in indices]


# ----------------------------------------------------------------------------- generation protocol
def _generate(generator: Generator, captions: list[str], lengths: np.ndarray, seed: int, chunk: int,
              dim: int, name: str) -> list[np.ndarray]:
    """The generator's motions for (caption, length) pairs, `chunk` per call, checked."""
    out: list[np.ndarray] = []
    for k, lo in enumerate(range(0, len(captions), chunk)):
        want = [int(x) for x in lengths[lo:lo + chunk]]
        got = generator.generate(captions[lo:lo + chunk], want, seed + k)
        if len(got) != len(want):
            raise ProtocolError(f"{name} returned {len(got)} motions for {len(want)} captions")
        for motion, length in zip(got, want):
            motion = np.asarray(motion, np.float32)
            if motion.shape != (length, dim):
                raise ProtocolError(f"{name} returned a motion of shape {motion.shape} where ({length}, {dim}) "
                                    "was asked (raw features at the ground-truth length)")
            out.append(motion)
    return out


def score_replication(generator: Generator | GroundTruth, test: EvaluationSet, draw: Draw,
                      options: ProtocolOptions, name: str = "generator") -> dict[str, float]:
    """All metrics of one generator in one replication."""
    evaluator, dim = test.evaluator, test.evaluator.cfg.dim_pose
    idx = draw.order
    lengths = draw.length[idx]
    if isinstance(generator, GroundTruth):
        motions = test.crops(idx, draw.start, draw.length)
    else:
        motions = _generate(generator, test.chosen_captions(idx, draw), lengths, draw.seed,
                            options.generation_batch, dim, name)
    motion_emb = evaluator.embed_motions(motions)
    text_emb = test.text_embeddings(idx, draw)
    top, mm_dist = r_precision(text_emb, motion_emb, options.batch_size)  # rows are already shuffled
    scores = {"R@1": float(top[0]), "R@2": float(top[1]), "R@3": float(top[2]), "MM-Dist": float(mm_dist),
              "FID": fid(test.real_emb, motion_emb),
              "Diversity": diversity(motion_emb, diversity_times(len(motion_emb), options.diversity_times),
                                      draw.pairs_rng(1))}
    if not isinstance(generator, GroundTruth) and len(draw.mm) and options.mm_generations > options.mm_pairs:
        g, captions = options.mm_generations, test.chosen_captions(draw.mm, draw)
        mm_motions = [m for k, (caption, length) in enumerate(zip(captions, draw.length[draw.mm]))
                      for m in _generate(generator, [caption] * g, np.full(g, length), draw.seed + 7919 + k, g, dim,
                                         name)]  # one caption's generations per call, as the reference
        emb = evaluator.embed_motions(mm_motions).reshape(len(draw.mm), g, -1)  # [K, g, d]
        scores["MultiModality"] = multimodality(emb, options.mm_pairs, draw.pairs_rng(2))
    return scores


@dataclass
class GenerationReport:
    """Per generator, per metric: (mean, 95% half-interval); plus what the numbers came from."""

    results: dict[str, dict[str, tuple[float, float]]]
    runs: dict[str, list[dict[str, float]]]  # every replication's scores
    info: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"results": {name: {k: {"mean": m, "ci95": c} for k, (m, c) in metrics.items()}
                            for name, metrics in self.results.items()},
                "replications": self.runs, "info": self.info}


def evaluate_generation(generators: Mapping[str, Generator | GroundTruth], test: EvaluationSet,
                        options: ProtocolOptions = ProtocolOptions(),
                        progress: Callable[[str], None] | None = None) -> GenerationReport:
    """Score every generator over `options.replications` replications (the same draws for all)."""
    if len(test) < options.batch_size:
        raise ProtocolError(f"split {test.split!r} of {test.data} has {len(test)} samples; R-precision needs at "
                            f"least one batch of {options.batch_size}")
    started = time.perf_counter()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in generators}
    for r in range(options.replications):
        draw = test.draw(r, options)
        for name, generator in generators.items():
            runs[name].append(score_replication(generator, test, draw, options, name))
        if progress:
            progress(f"replication {r + 1}/{options.replications}")
    results = {name: {k: mean_interval([run[k] for run in rows]) for k in GENERATION_METRICS if k in rows[0]}
               for name, rows in runs.items()}
    n = len(test)
    info = {"data": test.data, "split": test.split, "dataset": test.dataset, "samples": n,
            "evaluated_per_replication": n // options.batch_size * options.batch_size,
            "captions": int(test.ann_ptr[-1]), "captions_without_tokens": test.untagged,
            "diversity_pairs": diversity_times(n // options.batch_size * options.batch_size,
                                               options.diversity_times),
            "mm_captions": min(options.mm_count(test.dataset), n), "options": asdict(options),
            "evaluator": test.evaluator.record, "evaluator_summary": test.evaluator.describe(),
            "setup_seconds": round(test.setup_seconds, 3), "seconds": round(time.perf_counter() - started, 3)}
    return GenerationReport(results, runs, info)


def _cell(mean: float, half: float) -> str:
    """The papers' `0.511±.003` (the interval without its leading zero when below 1)."""
    text = f"{half:.3f}"
    return f"{mean:.3f}±{text[1:] if text.startswith('0.') else text}"


def format_generation_table(report: GenerationReport) -> str:
    """The papers' table layout: one row per generator, mean±interval per metric."""
    head1 = ["Methods", "R Precision↑", "", "", "FID↓", "MM Dist↓", "Diversity→", "MultiModality↑"]
    head2 = ["", "Top 1", "Top 2", "Top 3", "", "", "", ""]
    keys = ["R@1", "R@2", "R@3", "FID", "MM-Dist", "Diversity", "MultiModality"]
    rows = [[name] + [_cell(*metrics[k]) if k in metrics else "-" for k in keys]
            for name, metrics in report.results.items()]
    table = [head1, head2, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head1))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(2, "-" * max(len(line) for line in lines))
    info = report.info
    options = info["options"]
    notes = [f"{info['dataset']} {info['split']} split of {info['data']}: {info['samples']} samples "
             f"({info['evaluated_per_replication']} per replication in batches of {options['batch_size']}), "
             f"{options['replications']} replications, mean±95% interval",
             f"diversity over {info['diversity_pairs']} pairs; multimodality: {info['mm_captions']} captions x "
             f"{options['mm_generations']} generations, {options['mm_pairs']} pairs ({options['paper']} preset)",
             f"evaluator: {info['evaluator_summary']}"]
    if info["captions_without_tokens"]:
        notes.append(f"{info['captions_without_tokens']} captions had no word/POS tokens: their words were used "
                     "with POS OTHER")
    return "\n".join(lines + [""] + notes)


# ----------------------------------------------------------------------------- retrieval protocol
def retrieval_protocol(text_latent: np.ndarray, motion_latent: np.ndarray, *, replications: int = 20,
                       batch_size: int = 32, seed: int = 0,
                       similarity: Similarity = "cosine") -> dict[str, dict[str, float]]:
    """{"all": metrics, "batches of 32": mean metrics plus "<key>/ci95" half-intervals} for matched
    rows of text and motion features; "batches of 32" averages over batches of one shuffle, and the
    shuffle is repeated `replications` times (left out when there are fewer rows than one batch)."""
    results = {"all": retrieval_all(text_latent, motion_latent, similarity)}
    if len(text_latent) >= batch_size:
        runs = [retrieval_in_batches(text_latent, motion_latent, batch_size,
                                     np.random.default_rng(np.random.SeedSequence([seed, r])), similarity)
                for r in range(replications)]
        summary: dict[str, float] = {}
        for key in runs[0]:
            mean, half = mean_interval([run[key] for run in runs])
            summary[key], summary[f"{key}/ci95"] = float(mean), float(half)
        results[f"batches of {batch_size}"] = summary
    return results



def _retrieval_cell(metrics: Mapping[str, Any], key: str, digits: int) -> str:
    half = metrics.get(f"{key}/ci95")
    return f"{metrics[key]:.{digits}f}" + ("" if half is None else f"±{half:.{digits}f}")


def format_retrieval_table(results: Mapping[str, Mapping[str, Any]], count: int | None = None) -> str:
    """TMR's and LaMP's retrieval tables: one row per protocol and direction, R@k in percent and the
    median rank (± the 95% interval where the protocol repeats shuffled batches)."""
    head = ["protocol", "direction", *(f"R@{k}" for k in RECALL_KS), "MedR"]
    rows = [head]
    for protocol, metrics in results.items():
        for direction, name in (("t2m", "text->motion"), ("m2t", "motion->text")):
            rows.append([protocol, name, *(_retrieval_cell(metrics, f"{direction}/R@{k}", 2) for k in RECALL_KS),
                         _retrieval_cell(metrics, f"{direction}/MedR", 1)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = [f"({count} samples)"] if count is not None else []
    if any(key.endswith("/ci95") for metrics in results.values() for key in metrics):
        notes.append("(batches: mean±95% interval over the repeated shuffles)")
    return "\n".join(lines + notes)

__all__ = ["Draw", "EvaluationSet", "GENERATION_METRICS", "GenerationError", "GenerationReport", "Generator",
           "GroundTruth", "generation_request",
           "PAPER_PRESETS", "ProtocolError", "ProtocolOptions", "evaluate_generation", "format_generation_table",
           "format_retrieval_table", "retrieval_protocol", "score_replication"]
