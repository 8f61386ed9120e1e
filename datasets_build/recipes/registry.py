"""Recipes: which release a build reads and the ordered processors and dataset steps it applies.

A recipe is data plus a function that makes its steps from the parsed options: later recipes
(mate, remodiffuse) are the same reader followed by more steps.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from datasets_build.core.errors import UserError
from datasets_build.core.flags import positive_int
from processors.base import DatasetStep, Processor


class RecipeError(UserError, ValueError):
    """Options that cannot make a recipe's steps; the message says what to pass."""


Options = Callable[[argparse.ArgumentParser], None]
MakeSteps = Callable[[argparse.Namespace, Path], tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]]


def _no_steps(args: argparse.Namespace, out: Path) -> tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]:
    return (), ()


def _text_features(args: argparse.Namespace, out: Path) -> Processor:
    from processors.text.features import TextFeatures

    return TextFeatures(encoder=args.text_encoder, checkpoint=args.clip_checkpoint,
                        token_features=args.token_features, device=args.device,
                        cache_dir=str(Path(out) / ".cache" / "text_features"))


def _vocabulary(args: argparse.Namespace) -> DatasetStep:
    from processors.text.vocabulary import Vocabulary

    return Vocabulary(min_count=args.vocab_min_count, keep_stop_words=args.vocab_stop_words)


def _fine_steps(args: argparse.Namespace, out: Path) -> tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]:
    from datasets_build.cli.llm_session import fine_steps
    from processors.text.lemmas import Lemmas

    return (fine_steps(args, out), Lemmas(), _text_features(args, out)), (_vocabulary(args),)


def _mate(args: argparse.Namespace, out: Path) -> tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]:
    from datasets_build.cli.llm_session import llm_config
    from processors.llm.decompose import Decompose
    from processors.text.lemmas import Lemmas

    decompose = Decompose(llm=llm_config(args, out), max_attempts=args.max_attempts, max_subtexts=args.max_subtexts)
    if args.skip_segmentation or args.dry_run or args.llm_batch_export:  # the last two send nothing
        return (Lemmas(), decompose), (_vocabulary(args),)
    return (Lemmas(), decompose, _segmentation(args)), (_vocabulary(args),)


def _segmentation(args: argparse.Namespace) -> Processor:
    from processors.segmentation import Segmentation

    if not args.segment_encoder:
        raise RecipeError(
            "the mate recipe cuts every motion into its sub-texts with a trained text-motion retrieval model: "
            "pass --segment-encoder RUN_DIR (train one with `python -m models.retrieval.train --data BUILT_DIR "
            "--out RUN_DIR` on a humanml3d/kitml build, or put a models.retrieval checkpoint.pt in RUN_DIR), "
            "or --skip-segmentation to build the text side only")
    run_dir = Path(args.segment_encoder)
    if not (run_dir / "checkpoint.pt").is_file() and not run_dir.is_file():
        raise RecipeError(f"--segment-encoder {run_dir}: no checkpoint.pt there (train one with "
                          f"`python -m models.retrieval.train --data BUILT_DIR --out {run_dir}`)")
    return Segmentation(encoder=str(run_dir), unit=args.segment_unit, min_len=args.segment_min_len,
                        device=args.segment_device)


def _remodiffuse(args: argparse.Namespace, out: Path) -> tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]:
    from processors.neighbours.rareness import Rareness
    from processors.neighbours.hybrid import RetrievalNeighbours

    neighbours = RetrievalNeighbours(k=args.k, lam=args.lam, exclude_mirror=not args.keep_mirrors,
                                     reference_mode=args.reference_retrieval)
    return (_text_features(args, out),), (neighbours, Rareness())


def _llm_options(parser: argparse.ArgumentParser) -> None:
    from datasets_build.cli.llm_session import add_llm_options

    add_llm_options(parser)


def _text_options(default_encoder: str, tokens: bool) -> Options:
    def add(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("text features", "per-annotation caption embeddings")
        group.add_argument("--text-encoder", choices=("clip", "clip-random", "minilm"), default=default_encoder,
                           help="clip: open_clip ViT-B-32 (ReMoDiffuse; needs --clip-checkpoint offline); minilm: "
                                "all-MiniLM-L6-v2, offline; clip-random: random weights, for tests (default: %(default)s)")
        group.add_argument("--clip-checkpoint", metavar="FILE",
                           help="local CLIP ViT-B-32 weights (open_clip .bin/.safetensors or OpenAI's ViT-B-32.pt); "
                                "without it open_clip downloads the 'openai' weights, which needs internet")
        group.add_argument("--token-features", action=argparse.BooleanOptionalAction, default=tokens,
                           help="also store the token sequence (CLIP: 77 x 512 float16) (default: %(default)s)")
        group.add_argument("--device", help="cuda or cpu (default: cuda when available)")

    return add


def _vocabulary_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("vocabulary", "lemmas of the training captions (MATE's prototypes); the "
                                      "summary prints K for several option sets")
    group.add_argument("--vocab-min-count", type=positive_int, default=1, metavar="N",
                       help="keep lemmas that occur at least N times in the training captions (default: %(default)s)")
    group.add_argument("--vocab-stop-words", action=argparse.BooleanOptionalAction, default=True,
                       help="keep spaCy's English stop words (a, the, with, ...) in the vocabulary (default: keep)")


def _mate_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decomposition", "captions split by the LLM into sub-texts in time order")
    group.add_argument("--max-subtexts", type=positive_int, default=8, metavar="N",
                       help="answers with more sub-texts fail the check (default: %(default)s)")
    group = parser.add_argument_group("segmentation", "each motion cut into its sub-texts: the exact minimum of "
                                      "sum 1 - cos(text, motion segment) over all partitions on a frame grid")
    group.add_argument("--segment-encoder", metavar="RUN_DIR",
                       help="a trained retrieval model (python -m models.retrieval.train); required unless "
                            "--skip-segmentation")
    group.add_argument("--skip-segmentation", action="store_true", help="build the text side only")
    group.add_argument("--segment-unit", type=positive_int, default=4, metavar="FRAMES",
                       help="boundary grid step; 1 searches every frame (default: %(default)s)")
    group.add_argument("--segment-min-len", type=positive_int, default=4, metavar="FRAMES",
                       help="shortest segment (default: %(default)s)")
    group.add_argument("--segment-device", help="cuda or cpu for the encoders (default: cuda when available)")


def _retrieval_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("retrieval", "hybrid neighbours s = cos * exp(-lambda |l_i - L| / max(l_i, L))")
    group.add_argument("--k", type=int, default=2, help="neighbours per annotation (default: %(default)s)")
    group.add_argument("--lambda", dest="lam", type=float, default=0.1, help="length term (default: %(default)s)")
    group.add_argument("--keep-mirrors", action="store_true",
                       help="allow a motion's mirror as its neighbour (its own motion never is)")
    group.add_argument("--reference-retrieval", action="store_true",
                       help="ReMoDiffuse's behaviour: skip candidates of equal length instead of excluding by id")


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str  # a key of datasets_build.formats.release.SPECS
    help: str
    make_steps: MakeSteps = _no_steps
    options: tuple[Options, ...] = ()
    uses_llm: bool = False  # LLM recipes run one process: the requests are concurrent already


RECIPES: dict[str, Recipe] = {
    "humanml3d": Recipe(
        "humanml3d", "humanml3d",
        "Build a HumanML3D release (new_joint_vecs, texts, splits, Mean/Std, index.csv) into Arrow.",
    ),
    "kitml": Recipe(
        "kitml", "kitml",
        "Build a KIT-ML release (new_joint_vecs, texts, splits, Mean/Std) into Arrow.",
    ),
    "finehumanml3d": Recipe(
        "finehumanml3d", "humanml3d",
        "HumanML3D plus FineHumanML3D's LLM fine-grained step descriptions with pseudo-code checks.",
        make_steps=_fine_steps, options=(_llm_options, _text_options("minilm", False), _vocabulary_options),
        uses_llm=True,
    ),
    "mate": Recipe(
        "mate", "humanml3d",
        "HumanML3D plus MATE's text side: lemmas, the training vocabulary with lemma_ids, and LLM sub-texts.",
        make_steps=_mate, options=(_llm_options, _mate_options, _vocabulary_options), uses_llm=True,
    ),
    "mate-kitml": Recipe(
        "mate-kitml", "kitml",
        "KIT-ML plus MATE's text side: lemmas, the training vocabulary with lemma_ids, and LLM sub-texts.",
        make_steps=_mate, options=(_llm_options, _mate_options, _vocabulary_options), uses_llm=True,
    ),
    "remodiffuse": Recipe(
        "remodiffuse", "humanml3d",
        "HumanML3D plus ReMoDiffuse retrieval: CLIP text features, hybrid neighbours, caption rareness.",
        make_steps=_remodiffuse, options=(_text_options("clip", True), _retrieval_options),
    ),
}
