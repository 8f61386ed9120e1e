"""MATE's data side: lemmas, the training vocabulary with lemma_ids, LLM sub-texts and the exact
joint segmentation of each motion into its sub-texts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from datasets_build.recipes.finehumanml3d import vocabulary
from datasets_build.recipes.options import DecompositionOptions, LLMOptions, SegmentationOptions, VocabularyOptions
from datasets_build.recipes.recipe import MissingSegmentEncoder, Recipe, Steps
from processors.base import Processor
from processors.llm.decompose import Decompose
from processors.segmentation import Segmentation
from processors.text.lemmas import Lemmas


@dataclasses.dataclass(frozen=True)
class MateOptions:
    llm: LLMOptions = LLMOptions()
    decomposition: DecompositionOptions = DecompositionOptions()
    segmentation: SegmentationOptions = SegmentationOptions()
    vocabulary: VocabularyOptions = VocabularyOptions()


def segmentation(options: SegmentationOptions) -> Processor:
    if not options.segment_encoder:
        raise MissingSegmentEncoder(
            "the mate recipe cuts every motion into its sub-texts with a trained text-motion retrieval model, and "
            "no segmentation encoder was given (or skip the segmentation to build the text side only)")
    run_dir = Path(options.segment_encoder)
    if not (run_dir / "checkpoint.pt").is_file() and not run_dir.is_file():
        raise MissingSegmentEncoder(f"the segmentation encoder {run_dir}: no checkpoint.pt there")
    return Segmentation(encoder=str(run_dir), unit=options.segment_unit, min_len=options.segment_min_len,
                        device=options.segment_device)


def mate_steps(options: MateOptions, out: Path) -> Steps:
    decompose = Decompose(llm=options.llm.config(out), max_attempts=options.llm.max_attempts,
                          max_subtexts=options.decomposition.max_subtexts)
    processors: tuple[Processor, ...] = (Lemmas(), decompose)
    if not options.segmentation.skip_segmentation:
        processors += (segmentation(options.segmentation),)
    return processors, (vocabulary(options.vocabulary),)


_TEXT_SIDE = "lemmas, the training vocabulary with lemma_ids, and LLM sub-texts."
MATE = Recipe("mate", "humanml3d", "HumanML3D plus MATE's text side: " + _TEXT_SIDE,
              options=MateOptions, make_steps=mate_steps, batch_size=256, num_proc=1, uses_llm=True)
MATE_KITML = dataclasses.replace(MATE, name="mate-kitml", dataset="kitml",
                                 help="KIT-ML plus MATE's text side: " + _TEXT_SIDE)
