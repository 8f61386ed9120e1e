"""LaMP's text side: caption clean-up (`pre_caption`), the BERT WordPiece tokenizer with `[DEC]` added,
and local BERT weights. No hub access: the tokenizer comes from a folder's `vocab.txt` (a local
`bert-base-uncased` download), or, for offline tests and runs without BERT, from a whole-word vocabulary
of the training captions (`caption_vocabulary`) [inferred: the Q-Former is then randomly initialised,
so any vocabulary that covers the captions does].
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import torch

from datasets_build.core.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BOS_TOKEN = "[DEC]"
_PUNCTUATION = re.compile(r"""([.!"()*#:;~])""")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class TextModelError(UserError, ValueError):
    """A BERT folder that lacks what LaMP needs."""


def pre_caption(caption: str, max_words: int = 32) -> str:
    """LaMP's clean-up [code: data/t2m_dataset.py pre_caption]: lower case, `.!"()*#:;~` become spaces,
    runs of spaces collapse, at most `max_words` words."""
    text = _PUNCTUATION.sub(" ", caption.lower())
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])


def caption_vocabulary(captions: Iterable[str]) -> list[str]:
    """BERT's special tokens, then every word and punctuation mark of the cleaned captions, sorted."""
    words = set()
    for caption in captions:
        words.update(re.findall(r"\w+|[^\w\s]", pre_caption(caption)))
    return [*SPECIAL_TOKENS, *sorted(words - set(SPECIAL_TOKENS))]


def write_vocabulary(words: Sequence[str], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def load_tokenizer(vocab_file: str | os.PathLike):
    """BertTokenizer (lower-casing WordPiece) of `vocab_file` with the bos token `[DEC]` added."""
    from transformers import BertTokenizer

    if not Path(vocab_file).is_file():
        raise TextModelError(f"{vocab_file} does not exist: pass --bert DIR with a vocab.txt (a local "
                             "bert-base-uncased), or leave --bert out to use the captions' own vocabulary")
    tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": BOS_TOKEN})
    return tokenizer


def bert_folder_files(folder: str | os.PathLike) -> tuple[Path, Path | None]:
    """(vocab.txt, the weights file or None) of a local BERT folder."""
    folder = Path(folder)
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise TextModelError(f"{folder} has no vocab.txt: --bert wants a local bert-base-uncased folder "
                             "(vocab.txt, config.json, model.safetensors or pytorch_model.bin)")
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    return vocab, weights


def read_bert_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A BERT state dict from a .safetensors or torch file (keys of BertModel get a `bert.` prefix)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not any(k.startswith("bert.") for k in state):
        state = {f"bert.{k}": v for k, v in state.items()}
    return state


__all__ = ["BOS_TOKEN", "SPECIAL_TOKENS", "TextModelError", "bert_folder_files", "caption_vocabulary",
           "load_tokenizer", "pre_caption", "read_bert_weights", "write_vocabulary"]
