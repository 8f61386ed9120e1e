"""The option groups of the recipes, as dataclasses: usable from Python as they are, and the source
of the command line's flags (`datasets_build.core.flags.add_options`): each default and help text
is written once, here. Field names are the flags' names (`llm_model` is `--llm-model`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import ClassVar, Literal

from datasets_build.core.flags import option
from datasets_build.llm.engine import LLMConfig
from datasets_build.llm.local_server import LOCAL_MODEL
from datasets_build.llm.structured import detect_server


@dataclasses.dataclass(frozen=True)
class LLMOptions:
    title: ClassVar[str] = "LLM"
    description: ClassVar[str] = ("an OpenAI-compatible endpoint: OpenAI (OPENAI_API_KEY), any base URL (vLLM, "
                                  "Ollama, llama.cpp), or a local llama.cpp server")

    llm: Literal["api", "local"] = option("api", "'api': OpenAI or --llm-base-url / OPENAI_BASE_URL; 'local': start a "
                                          "llama.cpp server on loopback with SmolLM2-135M (offline; poor answers)")
    llm_model: str | None = option(None, f"model name (default: gpt-4o-mini; {LOCAL_MODEL} with --llm local)")
    llm_base_url: str | None = option(None, "OpenAI-compatible base URL, e.g. http://localhost:8000/v1", metavar="URL")
    llm_api_key: str | None = option(None, "API key (default: OPENAI_API_KEY); never written anywhere", metavar="KEY",
                                     repr=False)
    llm_gguf: str | None = option(None, "with --llm local: serve this GGUF file instead", metavar="PATH")
    llm_temperature: float = option(0.0, "sampling temperature", metavar="T")
    llm_seed: int = option(0, "sampling seed", metavar="N")
    llm_max_tokens: int | None = option(None, "answer length cap (default: 1024; 600 with --llm local)", metavar="N")
    llm_concurrency: int | None = option(None, "requests in flight (default: 16; 1 with --llm local, whose server "
                                               "answers one at a time)", metavar="N")
    llm_timeout: float | None = option(None, "seconds per request (default: 120; 900 with --llm local)",
                                       metavar="SECONDS")
    llm_max_retries: int = option(6, "retries of a failed request (following retry-after)", metavar="N")
    max_attempts: int = option(3, "answers per caption before it is kept as failed (re-asked with the reasons)", metavar="N", positive=True)
    llm_structured: Literal["auto", "grammar", "json-schema", "off"] = option(
        "auto", "constrained decoding of the answers' form: a GBNF grammar (llama.cpp; vLLM's structured_outputs), "
                "a JSON schema (OpenAI's strict response_format; vLLM; llama.cpp), or off; auto: grammar for "
                "llama.cpp, json-schema elsewhere")
    llm_server: Literal["auto", "openai", "vllm", "llama.cpp", "compatible"] = option(
        "auto", "the kind of server, which decides how the constraint is sent; auto: llama.cpp with --llm local, "
                "OpenAI without a base URL, else asked from the server's /models (compatible when unknown)")

    def config(self, out: str | Path) -> LLMConfig:
        """The engine's configuration, with the answer cache in the build's cache folder."""
        local = self.llm == "local"

        def pick(value, api_default, local_default):
            return value if value is not None else (local_default if local else api_default)

        server = self.llm_server  # auto: --llm local runs llama.cpp; an endpoint is asked what it is
        if server == "auto":
            server = "llama.cpp" if local else detect_server(self.llm_base_url or os.environ.get("OPENAI_BASE_URL"),
                                                             self.llm_api_key or os.environ.get("OPENAI_API_KEY"))
        return LLMConfig(model=self.llm_model or (LOCAL_MODEL if local else "gpt-4o-mini"),
                         base_url=self.llm_base_url, temperature=self.llm_temperature, seed=self.llm_seed,
                         max_tokens=pick(self.llm_max_tokens, 1024, 600), concurrency=pick(self.llm_concurrency, 16, 1),
                         timeout=pick(self.llm_timeout, 120.0, 900.0), max_retries=self.llm_max_retries,
                         cache_path=str(Path(out) / ".cache" / "llm.sqlite"), structured=self.llm_structured,
                         server=server)


@dataclasses.dataclass(frozen=True)
class TextFeatureOptions:
    title: ClassVar[str] = "text features"
    description: ClassVar[str] = "per-annotation caption embeddings"

    text_encoder: str = option(
        "minilm", "clip: open_clip ViT-B-32 (ReMoDiffuse; needs --clip-checkpoint offline); minilm: all-MiniLM-L6-v2, "
                  "offline; clip-random: random weights, for tests; mate:RUN_DIR: a MATE run's motion-aligned CLIP "
                  "(python -m models train mate)")
    clip_checkpoint: str | None = option(
        None, "local CLIP ViT-B-32 weights (open_clip .bin/.safetensors or OpenAI's ViT-B-32.pt); without it "
              "open_clip downloads the 'openai' weights, which needs internet", metavar="FILE")
    token_features: bool = option(False, "also store the token sequence (CLIP: 77 x 512 float16)", negatable=True)
    device: str | None = option(None, "cuda or cpu for the text encoder (default: cuda when available)",
                                flag="--text-device", aliases=("--device",))

    def __post_init__(self) -> None:
        from datasets_build.core.flags import OptionError
        from datasets_build.text.encoders import ENCODERS, is_encoder_name

        if not is_encoder_name(self.text_encoder):
            raise OptionError(f"--text-encoder {self.text_encoder!r}: choose one of {', '.join(ENCODERS)} or "
                              f"mate:RUN_DIR (a run of python -m models train mate)")


@dataclasses.dataclass(frozen=True)
class VocabularyOptions:
    title: ClassVar[str] = "vocabulary"
    description: ClassVar[str] = ("lemmas of the training captions (MATE's prototypes); the summary prints K for "
                                  "several option sets")

    vocab_min_count: int = option(1, "keep lemmas that occur at least N times in the training captions",
                                  metavar="N", positive=True)
    vocab_stop_words: bool = option(True, "keep spaCy's English stop words (a, the, with, ...) in the vocabulary")


@dataclasses.dataclass(frozen=True)
class DecompositionOptions:
    title: ClassVar[str] = "decomposition"
    description: ClassVar[str] = "captions split by the LLM into sub-texts in time order"

    max_subtexts: int = option(8, "answers with more sub-texts fail the check", metavar="N", positive=True)


@dataclasses.dataclass(frozen=True)
class SegmentationOptions:
    title: ClassVar[str] = "segmentation"
    description: ClassVar[str] = ("each motion cut into its sub-texts: the exact minimum of sum 1 - cos(text, motion "
                                  "segment) over all partitions on a frame grid")

    segment_encoder: str | None = option(None, "a trained retrieval model run folder (python -m models train "
                                               "retrieval); required unless --skip-segmentation", metavar="RUN_DIR")
    skip_segmentation: bool = option(False, "build the text side only")
    segment_unit: int = option(4, "boundary grid step; 1 searches every frame", metavar="FRAMES", positive=True)
    segment_min_len: int = option(4, "shortest segment", metavar="FRAMES", positive=True)
    segment_device: str | None = option(None, "cuda or cpu for the encoders (default: cuda when available)")


@dataclasses.dataclass(frozen=True)
class NeighbourOptions:
    title: ClassVar[str] = "retrieval"
    description: ClassVar[str] = "hybrid neighbours s = cos * exp(-lambda |l_i - L| / max(l_i, L))"

    k: int = option(2, "neighbours per annotation", metavar="K", positive=True)
    lam: float = option(0.1, "length term", flag="--lambda", metavar="LAMBDA")
    keep_mirrors: bool = option(False, "allow a motion's mirror as its neighbour (its own motion never is)")
    reference_retrieval: bool = option(False, "ReMoDiffuse's behaviour: skip candidates of equal length instead of "
                                              "excluding by id")


@dataclasses.dataclass(frozen=True)
class MotionTokenOptions:
    title: ClassVar[str] = "motion tokens"
    description: ClassVar[str] = ("code ids of a trained motion VQ-VAE for every motion and its mirror, so token models "
                                  "never re-encode")

    motion_tokenizer: str | None = option(None, "a trained VQ-VAE run folder (python -m models train vqvae): adds "
                                                "motion_tokens, mirror_motion_tokens and subclip_tokens",
                                          metavar="RUN_DIR")
    tokenizer_device: str | None = option(None, "cuda or cpu for the tokenizer (default: cuda when available)")


@dataclasses.dataclass(frozen=True)
class MotionCaptionOptions:
    title: ClassVar[str] = "generated captions"
    description: ClassVar[str] = "captions of every motion by a trained LaMP-M2T run (for motions without text)"

    captioner: str | None = option(None, "a LaMP-M2T run folder (python -m models train lamp-m2t): adds "
                                         "generated_caption per motion", metavar="RUN_DIR")
    captioner_lm: str | None = option(None, "the captioner's language-model folder when it moved since training",
                                      metavar="DIR")
    captioner_device: str | None = option(None, "cuda or cpu for the captioner (default: cuda when available)")
