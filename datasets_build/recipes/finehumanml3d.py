"""FineHumanML3D: LLM fine-grained step descriptions with pseudo-code checks, lemmas, the
vocabulary and text features."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from datasets_build.recipes.options import LLMOptions, TextFeatureOptions, VocabularyOptions
from datasets_build.recipes.recipe import Recipe, Steps
from processors.base import DatasetStep, Processor
from processors.llm.fine_steps import FineSteps
from processors.text.features import TextFeatures
from processors.text.lemmas import Lemmas
from processors.text.vocabulary import Vocabulary


@dataclasses.dataclass(frozen=True)
class FineHumanML3DOptions:
    llm: LLMOptions = LLMOptions()
    text: TextFeatureOptions = TextFeatureOptions()
    vocabulary: VocabularyOptions = VocabularyOptions()


def text_features(options: TextFeatureOptions, out: Path) -> Processor:
    return TextFeatures(encoder=options.text_encoder, checkpoint=options.clip_checkpoint,
                        token_features=options.token_features, device=options.device,
                        cache_dir=str(Path(out) / ".cache" / "text_features"))


def vocabulary(options: VocabularyOptions) -> DatasetStep:
    return Vocabulary(min_count=options.vocab_min_count, keep_stop_words=options.vocab_stop_words)


def fine_steps(options: FineHumanML3DOptions, out: Path) -> Steps:
    asking = FineSteps(llm=options.llm.config(out), max_attempts=options.llm.max_attempts)
    return (asking, Lemmas(), text_features(options.text, out)), (vocabulary(options.vocabulary),)


FINEHUMANML3D = Recipe(
    "finehumanml3d", "humanml3d",
    "HumanML3D plus FineHumanML3D's LLM fine-grained step descriptions with pseudo-code checks.",
    options=FineHumanML3DOptions, make_steps=fine_steps, batch_size=256, num_proc=1, uses_llm=True,
)
