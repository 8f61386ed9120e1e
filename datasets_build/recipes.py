"""Recipes: which release a build reads and the ordered processors and dataset steps it applies.

A recipe is data plus a function that makes its steps from the parsed options: later recipes
(mate, remodiffuse) are the same reader followed by more steps.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from processors.base import DatasetStep, Processor

Options = Callable[[argparse.ArgumentParser], None]
MakeSteps = Callable[[argparse.Namespace, Path], tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]]


def _no_steps(args: argparse.Namespace, out: Path) -> tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]:
    return (), ()


def _text_features(args: argparse.Namespace, out: Path) -> Processor:
    from processors.text_features import TextFeatures

    return TextFeatures(encoder=args.text_encoder, checkpoint=args.clip_checkpoint,
                        token_features=args.token_features, device=args.device,
                        cache_dir=str(Path(out) / ".cache" / "text_features"))


def _fine_steps(args: argparse.Namespace, out: Path) -> tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]:
    from datasets_build.llm_cli import fine_steps

    return (fine_steps(args, out), _text_features(args, out)), ()


def _remodiffuse(args: argparse.Namespace, out: Path) -> tuple[tuple[Processor, ...], tuple[DatasetStep, ...]]:
    from processors.rareness import Rareness
    from processors.retrieval import RetrievalNeighbours

    neighbours = RetrievalNeighbours(k=args.k, lam=args.lam, exclude_mirror=not args.keep_mirrors,
                                     reference_mode=args.reference_retrieval)
    return (_text_features(args, out),), (neighbours, Rareness())


def _llm_options(parser: argparse.ArgumentParser) -> None:
    from datasets_build.llm_cli import add_llm_options

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
    dataset: str  # a key of datasets_build.release.SPECS
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
        make_steps=_fine_steps, options=(_llm_options, _text_options("minilm", False)), uses_llm=True,
    ),
    "remodiffuse": Recipe(
        "remodiffuse", "humanml3d",
        "HumanML3D plus ReMoDiffuse retrieval: CLIP text features, hybrid neighbours, caption rareness.",
        make_steps=_remodiffuse, options=(_text_options("clip", True), _retrieval_options),
    ),
}
