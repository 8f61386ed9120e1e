"""The standard text-to-motion evaluator of Guo et al. (CVPR 2022, "text_mot_match"), in one file.

Read top to bottom: the word vectorizer (GloVe vectors + a 15-way POS one-hot, 22-token layout),
the three networks with the reference attribute names (so an official `finest.tar` loads with
`strict=True`), the matcher that holds them, the evaluator's own statistics, and `Evaluator`, the
object the protocol uses: raw motions and `word/POS` token lists in, co-embeddings out.
Facts: ../shared/docs/MODELS.md section 1 [code: EricGuo5513/text-to-motion networks/modules.py,
utils/word_vectorizer.py, data/dataset.py, networks/evaluator_wrapper.py].

An evaluator folder (`--evaluator DIR`) is laid out like the reference checkpoints:

    DIR/text_mot_match/model/finest.tar      {"text_encoder", "motion_encoder", "movement_encoder", ...}
    DIR/meta/mean.npy, DIR/meta/std.npy      the evaluator's statistics (also found in the reference's
                                             DIR/Comp_v6_KLD01/meta or DIR/Comp_v6_KLD005/meta)
    DIR/glove/our_vab_data.npy, our_vab_words.pkl, our_vab_idx.pkl
                                             (also DIR/../../glove, the reference repository's root)
    DIR/evaluator.json                       optional: what trained it (written by `train evaluator`)

so `DIR` is the reference's `checkpoints/t2m` (or `checkpoints/kit`), or a run folder of
`python -m models train evaluator`, which writes exactly this layout.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from datasets_build.core.errors import UserError
from datasets_build.motion.normalizer import Normalizer
from datasets_build.motion.specs import SPECS

MATCHER_CHECKPOINT = Path("text_mot_match") / "model" / "finest.tar"
META_FOLDERS = (Path("meta"), Path("Comp_v6_KLD01") / "meta", Path("Comp_v6_KLD005") / "meta")
GLOVE_PREFIX = "our_vab"
GLOVE_FILES = tuple(f"{GLOVE_PREFIX}_{suffix}" for suffix in ("data.npy", "words.pkl", "idx.pkl"))
RECORD = "evaluator.json"
FEAT_BIAS = 5.0  # root and foot-contact std divided by this [code: data/dataset.py, feat_bias 5]


class EvaluatorError(UserError, ValueError):
    """An evaluator folder, file or input that cannot be used; the message names it."""


# ----------------------------------------------------------------------------- words: vectors and POS
POS_ENUMERATOR = {"VERB": 0, "NOUN": 1, "DET": 2, "ADP": 3, "NUM": 4, "AUX": 5, "PRON": 6, "ADJ": 7, "ADV": 8,
                  "Loc_VIP": 9, "Body_VIP": 10, "Obj_VIP": 11, "Act_VIP": 12, "Desc_VIP": 13, "OTHER": 14}
# a word of these lists takes the list's class instead of its spaCy POS (first list wins)
VIP_WORDS = {
    "Loc_VIP": ("left", "right", "clockwise", "counterclockwise", "anticlockwise", "forward", "back", "backward",
                "up", "down", "straight", "curve"),
    "Body_VIP": ("arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg", "waist", "eye", "knee", "shoulder",
                 "thigh"),
    "Obj_VIP": ("stair", "dumbbell", "chair", "window", "floor", "car", "ball", "handrail", "baseball",
                "basketball"),
    "Act_VIP": ("walk", "run", "swing", "pick", "bring", "kick", "put", "squat", "throw", "hop", "dance", "jump",
                "turn", "stumble", "stop", "sit", "lift", "lower", "raise", "wash", "stand", "kneel", "stroll", "rub",
                "bend", "balance", "flap", "jog", "shuffle", "lean", "rotate", "spin", "spread", "climb"),
    "Desc_VIP": ("slowly", "carefully", "fast", "careful", "slow", "quickly", "happy", "angry", "sad", "happily",
                 "angrily", "sadly"),
}
_VIP_OF = {}
for _cls, _words in VIP_WORDS.items():
    for _w in _words:
        _VIP_OF.setdefault(_w, _cls)
SPECIAL_WORDS = ("sos", "eos", "unk")  # start, end and unknown/padding tokens of the vocabulary


def token_layout(tokens: Sequence[str], max_text_len: int = 20) -> tuple[list[str], int]:
    """(max_text_len + 2 tokens, cap_len): `sos/OTHER` + tokens + `eos/OTHER`, padded with `unk/OTHER`;
    captions of max_text_len tokens or more are cropped to max_text_len first (cap_len = 22)."""
    tokens = list(tokens)
    if len(tokens) < max_text_len:
        laid = ["sos/OTHER", *tokens, "eos/OTHER"]
        cap_len = len(laid)
        return laid + ["unk/OTHER"] * (max_text_len + 2 - cap_len), cap_len
    laid = ["sos/OTHER", *tokens[:max_text_len], "eos/OTHER"]
    return laid, len(laid)


def pos_one_hot(pos: str) -> np.ndarray:
    """[15] float32 one-hot of a POS class (unknown tags are OTHER)."""
    out = np.zeros(len(POS_ENUMERATOR), np.float32)
    out[POS_ENUMERATOR.get(pos, POS_ENUMERATOR["OTHER"])] = 1.0
    return out


try:  # numpy integers pickled inside a word index
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar as _numpy_scalar  # type: ignore[no-redef]


class _PlainUnpickler(pickle.Unpickler):
    """Lists, dicts, strings and numbers only: a vocabulary file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _numpy_scalar
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a vocabulary file")


def _read_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return _PlainUnpickler(f).load()


class WordVectorizer:
    """`word/POS` -> (300-d word vector, 15-d POS one-hot), as the reference's WordVectorizer:
    a word in the vocabulary gets its vector and, if it is in a VIP list, that list's class, else
    its POS; any other word gets the `unk` vector and OTHER."""

    def __init__(self, vectors: np.ndarray, words: Sequence[str], word2idx: dict[str, int],
                 source: str = "memory") -> None:
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2:
            raise EvaluatorError(f"{source}: word vectors must be a [words, dim] array, got shape {vectors.shape}")
        missing = [w for w in words if w not in word2idx]
        if missing:
            raise EvaluatorError(f"{source}: the word index has no entry for {missing[0]!r}")
        self.index = {w: int(word2idx[w]) for w in words}
        if any(not 0 <= i < len(vectors) for i in self.index.values()):
            raise EvaluatorError(f"{source}: the word index points past the {len(vectors)} vectors")
        if "unk" not in self.index:
            raise EvaluatorError(f"{source}: the vocabulary has no 'unk' word")
        self.vectors, self.source = vectors, source
        self.dim = vectors.shape[1]

    @classmethod
    def load(cls, folder: str | os.PathLike, prefix: str = GLOVE_PREFIX) -> "WordVectorizer":
        folder = Path(folder)
        paths = [folder / f"{prefix}_{s}" for s in ("data.npy", "words.pkl", "idx.pkl")]
        for path in paths:
            if not path.is_file():
                raise EvaluatorError(f"word vector file {path} is missing")
        try:
            vectors = np.load(paths[0], allow_pickle=False)
        except (OSError, ValueError) as error:
            raise EvaluatorError(f"word vector file {paths[0]} cannot be read ({error})") from None
        loaded = []
        for path, kind in ((paths[1], list), (paths[2], dict)):
            try:
                value = _read_pickle(path)
            except Exception as error:  # truncated, not a pickle, or a class we refuse
                raise EvaluatorError(f"vocabulary file {path} cannot be read ({error})") from None
            if not isinstance(value, kind):
                raise EvaluatorError(f"vocabulary file {path} holds a {type(value).__name__}, not a {kind.__name__}")
            loaded.append(value)
        return cls(vectors, loaded[0], loaded[1], source=str(folder))

    def save(self, folder: str | os.PathLike, prefix: str = GLOVE_PREFIX) -> None:
        """Write the reference's three files (a run's own vocabulary)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        words = list(self.index)
        np.save(folder / f"{prefix}_data.npy", self.vectors)
        with open(folder / f"{prefix}_words.pkl", "wb") as f:
            pickle.dump(words, f)
        with open(folder / f"{prefix}_idx.pkl", "wb") as f:
            pickle.dump(dict(self.index), f)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: str) -> tuple[np.ndarray, np.ndarray]:
        word, _, pos = item.rpartition("/") if "/" in item else (item, "", "OTHER")
        if word not in self.index:
            return self.vectors[self.index["unk"]], pos_one_hot("OTHER")
        return self.vectors[self.index[word]], pos_one_hot(_VIP_OF.get(word, pos))

    def encode(self, tokens: Sequence[str], max_text_len: int = 20) -> tuple[np.ndarray, np.ndarray, int]:
        """(word_embs [max_text_len+2, dim], pos_ohot [max_text_len+2, 15], cap_len) of a caption's tokens."""
        laid, cap_len = token_layout(tokens, max_text_len)
        pairs = [self[t] for t in laid]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), cap_len

    def encode_batch(self, token_lists: Sequence[Sequence[str]],
                     max_text_len: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """word_embs [N, L, dim], pos_ohot [N, L, 15], cap_lens [N] (L = max_text_len + 2)."""
        width = max_text_len + 2
        words = np.zeros((len(token_lists), width, self.dim), np.float32)
        pos = np.zeros((len(token_lists), width, len(POS_ENUMERATOR)), np.float32)
        lens = np.zeros(len(token_lists), np.int64)
        for i, tokens in enumerate(token_lists):
            words[i], pos[i], lens[i] = self.encode(tokens, max_text_len)
        return words, pos, lens


def caption_tokens(caption: str) -> list[str]:
    """Fallback `word/OTHER` tokens for a caption that has no tagged tokens (lower-cased words)."""
    words = "".join(c if c.isalpha() or c.isspace() else " " for c in caption.replace("-", "")).lower().split()
    return [f"{w}/OTHER" for w in words]


# ----------------------------------------------------------------------------- networks
@dataclass
class EvaluatorConfig:
    """The networks' widths [code: options/train_options.py TrainTexMotMatchOptions, TrainDecompOptions]."""

    dim_pose: int = 263  # 251 for KIT-ML
    dim_word: int = 300
    dim_pos_ohot: int = 15
    dim_movement_enc_hidden: int = 512
    dim_movement_dec_hidden: int = 512
    dim_movement_latent: int = 512
    dim_text_hidden: int = 512
    dim_motion_hidden: int = 1024
    dim_coemb_hidden: int = 512
    unit_length: int = 4  # the movement encoder downsamples time by 4
    max_text_len: int = 20
    max_motion_length: int = 196


def init_weight(m: nn.Module) -> None:
    """xavier_normal_ weights and zero biases on Conv1d / Linear / ConvTranspose1d [code: modules.py]."""
    if isinstance(m, (nn.Conv1d, nn.Linear, nn.ConvTranspose1d)):
        nn.init.xavier_normal_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)


class MovementConvEncoder(nn.Module):
    """motion without foot contact [B, T, D-4] -> movement tokens [B, T/4, latent]."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.main = nn.Sequential(  # keys main.0.*, main.3.*
            nn.Conv1d(input_size, hidden_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)
        self.main.apply(init_weight)
        self.out_net.apply(init_weight)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        h = self.main(inputs.permute(0, 2, 1)).permute(0, 2, 1)  # [B, T/4, latent]
        return self.out_net(h)

    def forward_eval(self, inputs: torch.Tensor, padded: bool = False) -> torch.Tensor:
        """`forward` in eval mode (dropout off) for T a multiple of 4, each convolution computed as
        two matrix products (`conv_k4s2`): the same function, 2-3x faster on CPU. `padded`: the
        inputs already hold one zero frame before and after the T frames [B, T + 2, D-4]."""
        h = F.leaky_relu(conv_k4s2(inputs, self.main[0], padded), 0.2)  # [B, T/2, hidden]
        h = F.leaky_relu(conv_k4s2(h, self.main[3]), 0.2)  # [B, T/4, latent]
        return self.out_net(h)


def conv_k4s2(x: torch.Tensor, conv: nn.Conv1d, padded: bool = False) -> torch.Tensor:
    """`conv` (kernel 4, stride 2, padding 1) over the time axis of x [B, T, C] (T even) -> [B, T/2, O]
    (`padded`: x is [B, T + 2, C] with the zero frames already there). Padded frame pairs
    p_j = (2j, 2j+1) give output i = p_i @ W[:, :, 0:2] + p_(i+1) @ W[:, :, 2:4] + b."""
    x = x if padded else F.pad(x, (0, 0, 1, 1))  # [B, T + 2, C]
    b, t, c = x.shape
    pairs = x.reshape(b, t // 2, 2 * c)  # [B, T/2 + 1, 2C]: padded frames 2j, 2j+1
    first = conv.weight[:, :, :2].permute(2, 1, 0).reshape(2 * c, -1)  # [2C, O], taps 0 and 1
    second = conv.weight[:, :, 2:].permute(2, 1, 0).reshape(2 * c, -1)  # [2C, O], taps 2 and 3
    return pairs[:, :-1] @ first + pairs[:, 1:] @ second + conv.bias


class MovementConvDecoder(nn.Module):
    """movement tokens [B, T/4, latent] -> motion [B, T, D] (the autoencoder stage only)."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose1d(input_size, hidden_size, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.ConvTranspose1d(hidden_size, output_size, 4, 2, 1), nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)
        self.main.apply(init_weight)
        self.out_net.apply(init_weight)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        h = self.main(inputs.permute(0, 2, 1)).permute(0, 2, 1)  # [B, T, D]
        return self.out_net(h)


def _bigru_last(gru: nn.GRU, hidden: nn.Parameter, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Final forward and backward states [B, 2H] of a BiGRU over x [B, T, H] packed by `lengths`
    (sorted descending), started from the learned initial state `hidden` [2, 1, H]."""
    h0 = hidden.repeat(1, x.shape[0], 1).to(x.dtype)  # [2, B, H]
    packed = pack_padded_sequence(x, lengths.cpu().tolist(), batch_first=True)
    _, last = gru(packed, h0)  # last [2, B, H]
    return torch.cat([last[0], last[1]], dim=-1)


class MotionEncoderBiGRUCo(nn.Module):
    """movement tokens [B, T/4, latent] and token counts m_lens // 4 (descending) -> [B, coemb]."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(  # keys output_net.0/1/3.*
            nn.Linear(hidden_size * 2, hidden_size), nn.LayerNorm(hidden_size), nn.LeakyReLU(0.2),
            nn.Linear(hidden_size, output_size),
        )
        self.input_emb.apply(init_weight)
        self.output_net.apply(init_weight)
        self.hidden_size = hidden_size
        self.hidden = nn.Parameter(torch.randn((2, 1, hidden_size)))

    def forward(self, inputs: torch.Tensor, m_lens: torch.Tensor) -> torch.Tensor:
        return self.output_net(_bigru_last(self.gru, self.hidden, self.input_emb(inputs), m_lens))


class TextEncoderBiGRUCo(nn.Module):
    """word vectors [B, 22, 300] + POS one-hots [B, 22, 15], cap_lens (descending) -> [B, coemb]."""

    def __init__(self, word_size: int, pos_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.pos_emb = nn.Linear(pos_size, word_size)
        self.input_emb = nn.Linear(word_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(
            nn.Linear(hidden_size * 2, hidden_size), nn.LayerNorm(hidden_size), nn.LeakyReLU(0.2),
            nn.Linear(hidden_size, output_size),
        )
        self.input_emb.apply(init_weight)
        self.pos_emb.apply(init_weight)
        self.output_net.apply(init_weight)
        self.hidden_size = hidden_size
        self.hidden = nn.Parameter(torch.randn((2, 1, hidden_size)))

    def forward(self, word_embs: torch.Tensor, pos_onehot: torch.Tensor, cap_lens: torch.Tensor) -> torch.Tensor:
        inputs = word_embs + self.pos_emb(pos_onehot)  # the POS embedding is added to the word vector
        return self.output_net(_bigru_last(self.gru, self.hidden, self.input_emb(inputs), cap_lens))


class TextMotionMatcher(nn.Module):
    """The three encoders under the checkpoint's top-level names."""

    def __init__(self, cfg: EvaluatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.movement_encoder = MovementConvEncoder(cfg.dim_pose - 4, cfg.dim_movement_enc_hidden,
                                                    cfg.dim_movement_latent)
        self.text_encoder = TextEncoderBiGRUCo(cfg.dim_word, cfg.dim_pos_ohot, cfg.dim_text_hidden,
                                               cfg.dim_coemb_hidden)
        self.motion_encoder = MotionEncoderBiGRUCo(cfg.dim_movement_latent, cfg.dim_motion_hidden,
                                                   cfg.dim_coemb_hidden)

    def encode_motion(self, motions: torch.Tensor, m_lens: torch.Tensor) -> torch.Tensor:
        """Normalised motions [B, T, D] sorted by m_lens descending -> [B, coemb]."""
        movements = self.movement_encoder(motions[..., :-4]).detach()  # foot contact dropped
        return self.motion_encoder(movements, m_lens // self.cfg.unit_length)

    def encode_movement_input(self, padded: torch.Tensor, m_lens: torch.Tensor) -> torch.Tensor:
        """`encode_motion` in eval mode from the movement encoder's input laid out in advance:
        normalised motions without foot contact between one zero frame before and after, [B, T + 2, D-4]
        with T a multiple of 4, sorted by m_lens descending -> [B, coemb]."""
        movements = self.movement_encoder.forward_eval(padded, padded=True)
        return self.motion_encoder(movements, m_lens // self.cfg.unit_length)

    def co_embed(self, word_embs: torch.Tensor, pos_ohot: torch.Tensor, cap_lens: torch.Tensor,
                 motions: torch.Tensor, m_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference wrapper's get_co_embeddings: the batch comes sorted by cap_lens descending
        (the collate's order); both embeddings are returned re-ordered by m_lens descending (ties:
        later rows first, the reversed stable argsort), i.e. rows `align = argsort(m_lens)[::-1]`."""
        align = torch.from_numpy(np.argsort(m_lens.cpu().numpy(), kind="stable")[::-1].copy()).to(motions.device)
        motion_emb = self.encode_motion(motions[align], m_lens[align])
        text_emb = self.text_encoder(word_embs, pos_ohot, cap_lens)[align]
        return text_emb, motion_emb

    def reference_state(self) -> dict[str, Any]:
        """The three state dicts under the checkpoint's top-level keys."""
        return {"text_encoder": self.text_encoder.state_dict(), "motion_encoder": self.motion_encoder.state_dict(),
                "movement_encoder": self.movement_encoder.state_dict()}


def config_from_state(state: dict[str, Any], source: str = "the checkpoint") -> EvaluatorConfig:
    """The widths of a reference checkpoint, read from its tensor shapes."""
    try:
        conv0 = state["movement_encoder"]["main.0.weight"]  # [enc_hidden, D-4, 4]
        conv3 = state["movement_encoder"]["main.3.weight"]  # [latent, enc_hidden, 4]
        motion_in = state["motion_encoder"]["input_emb.weight"]  # [motion_hidden, latent]
        motion_out = state["motion_encoder"]["output_net.3.weight"]  # [coemb, motion_hidden]
        text_in = state["text_encoder"]["input_emb.weight"]  # [text_hidden, word]
        pos = state["text_encoder"]["pos_emb.weight"]  # [word, 15]
    except (KeyError, TypeError) as error:
        raise EvaluatorError(f"{source} is not a text_mot_match checkpoint (no {error} entry)") from None
    return EvaluatorConfig(dim_pose=int(conv0.shape[1]) + 4, dim_word=int(text_in.shape[1]),
                           dim_pos_ohot=int(pos.shape[1]), dim_movement_enc_hidden=int(conv0.shape[0]),
                           dim_movement_latent=int(conv3.shape[0]), dim_text_hidden=int(text_in.shape[0]),
                           dim_motion_hidden=int(motion_in.shape[0]), dim_coemb_hidden=int(motion_out.shape[0]))


def load_matcher(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TextMotionMatcher:
    """The networks of a `finest.tar` (reference key names, loaded with strict=True)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluatorError(f"evaluator checkpoint {path} is missing")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise EvaluatorError(f"evaluator checkpoint {path} cannot be read ({reason})") from None
    if not isinstance(state, dict):
        raise EvaluatorError(f"evaluator checkpoint {path} is not a dictionary of state dicts")
    matcher = TextMotionMatcher(config_from_state(state, str(path)))
    for name in ("text_encoder", "motion_encoder", "movement_encoder"):
        try:
            getattr(matcher, name).load_state_dict(state[name], strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise EvaluatorError(f"evaluator checkpoint {path}: its {name} does not fit ({first})") from None
    return matcher.eval()


# ----------------------------------------------------------------------------- statistics
def evaluator_stats(mean: np.ndarray, std: np.ndarray, feat_bias: float = FEAT_BIAS) -> Normalizer:
    """The evaluator's meta statistics from a release's Mean/Std: root (4) and foot-contact (4)
    std divided by `feat_bias` (5) [code: data/dataset.py MotionDatasetV2]."""
    std = np.array(std, np.float32)
    std[:4] /= feat_bias
    std[-4:] /= feat_bias
    return Normalizer(np.asarray(mean, np.float32), std)


# ----------------------------------------------------------------------------- the evaluator
@dataclass(frozen=True)
class EvaluatorFiles:
    root: Path
    checkpoint: Path
    mean: Path
    std: Path
    glove: Path
    record: Path | None

    @classmethod
    def find(cls, root: str | os.PathLike, glove: str | os.PathLike | None = None) -> "EvaluatorFiles":
        """The files of an evaluator folder (layout in the module docstring); one sentence names
        the first missing one."""
        root = Path(root)
        if not root.is_dir():
            raise EvaluatorError(f"evaluator folder {root} does not exist (it should hold "
                                 f"{MATCHER_CHECKPOINT}, meta/mean.npy, meta/std.npy and glove/)")
        checkpoint = root / MATCHER_CHECKPOINT
        if not checkpoint.is_file():
            raise EvaluatorError(f"evaluator checkpoint {checkpoint} is missing")
        meta = next((root / m for m in META_FOLDERS if (root / m / "mean.npy").is_file()), root / META_FOLDERS[0])
        for name in ("mean.npy", "std.npy"):
            if not (meta / name).is_file():
                raise EvaluatorError(f"evaluator statistics {meta / name} are missing")
        if glove is None:
            candidates = [root / "glove", root.parent.parent / "glove"]
            glove = next((c for c in candidates if (c / GLOVE_FILES[0]).is_file()), candidates[0])
        glove = Path(glove)
        for name in GLOVE_FILES:
            if not (glove / name).is_file():
                raise EvaluatorError(f"word vector file {glove / name} is missing")
        record = root / RECORD
        return cls(root, checkpoint, meta / "mean.npy", meta / "std.npy", glove, record if record.is_file() else None)


def _read_stats(mean_path: Path, std_path: Path, dim: int) -> Normalizer:
    arrays = []
    for path in (mean_path, std_path):
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise EvaluatorError(f"evaluator statistics {path} cannot be read ({error})") from None
        if value.shape != (dim,):
            raise EvaluatorError(f"evaluator statistics {path} have shape {value.shape}; the checkpoint needs ({dim},)")
        arrays.append(value)
    try:
        return Normalizer(arrays[0], arrays[1])
    except ValueError as error:
        raise EvaluatorError(f"evaluator statistics {std_path}: {error}") from None


class Evaluator:
    """Guo et al.'s evaluator ready to use: raw motions [T, D] are normalised with its own meta
    statistics, captions are `word/POS` token lists. Embeddings come back in input order."""

    def __init__(self, matcher: TextMotionMatcher, vectorizer: WordVectorizer, stats: Normalizer,
                 device: str | torch.device = "cpu", record: dict[str, Any] | None = None) -> None:
        cfg = matcher.cfg
        if vectorizer.dim != cfg.dim_word:
            raise EvaluatorError(f"word vectors {vectorizer.source} are {vectorizer.dim}-d; the evaluator needs "
                                 f"{cfg.dim_word}-d")
        if stats.mean.shape != (cfg.dim_pose,):
            raise EvaluatorError(f"evaluator statistics have {stats.mean.shape[0]} dims; it needs {cfg.dim_pose}")
        self.device = torch.device(device)
        self.matcher = matcher.to(self.device).eval()
        self.vectorizer, self.stats, self.cfg = vectorizer, stats, cfg
        self.record = dict(record or {})

    @property
    def dim(self) -> int:
        return self.cfg.dim_coemb_hidden

    @property
    def dataset(self) -> str | None:
        """humanml3d or kitml, from the pose width."""
        return next((name for name, spec in SPECS.items() if spec.feature_dim == self.cfg.dim_pose), None)

    def describe(self) -> str:
        """One line: where it came from and its word vectors (random ones are flagged)."""
        words = self.record.get("word_vectors", {})
        note = ""
        if words.get("source") == "random":
            note = (f"; word vectors: RANDOM, not GloVe ({words.get('size')} words: {words.get('vocabulary')}): "
                    "numbers are not comparable with published ones")
        elif words.get("source"):
            note = f"; word vectors: {words['source']}"
        return f"{self.record.get('path', 'evaluator')} ({self.dataset}{note})"

    @torch.no_grad()
    def embed_texts(self, token_lists: Sequence[Sequence[str]], batch_size: int = 256) -> np.ndarray:
        """[N, coemb] float32 text embeddings of `word/POS` token lists."""
        n = len(token_lists)
        out = np.zeros((n, self.dim), np.float32)
        if n == 0:
            return out
        words, pos, lens = self.vectorizer.encode_batch(token_lists, self.cfg.max_text_len)
        order = np.argsort(-lens, kind="stable")  # packing wants descending lengths
        for lo in range(0, n, batch_size):
            idx = order[lo:lo + batch_size]
            emb = self.matcher.text_encoder(torch.from_numpy(words[idx]).to(self.device),
                                            torch.from_numpy(pos[idx]).to(self.device), torch.from_numpy(lens[idx]))
            out[idx] = emb.float().cpu().numpy()
        return out

    def _check_motion(self, index: int, motion: np.ndarray, frames: int) -> None:
        cfg = self.cfg
        if np.ndim(motion) != 2 or np.shape(motion)[1] != cfg.dim_pose:
            raise EvaluatorError(f"motion {index} has shape {np.shape(motion)}; the evaluator needs "
                                 f"[T, {cfg.dim_pose}]")
        if not cfg.unit_length <= len(motion) <= min(frames, cfg.max_motion_length):
            raise EvaluatorError(f"motion {index} has {len(motion)} frames; the evaluator takes {cfg.unit_length} "
                                 f"to {cfg.max_motion_length}")

    def normalise_motions(self, motions: Sequence[np.ndarray],
                          frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(normalised motions zero-padded to `frames` [N, frames, D] (default: max_motion_length,
        196, as the reference loader pads), lengths [N])."""
        frames = self.cfg.max_motion_length if frames is None else frames
        batch = np.zeros((len(motions), frames, self.cfg.dim_pose), np.float32)
        lengths = np.zeros(len(motions), np.int64)
        for i, motion in enumerate(motions):
            self._check_motion(i, motion, frames)
            t = lengths[i] = len(motion)
            np.subtract(motion, self.stats.mean, out=batch[i, :t])
            np.divide(batch[i, :t], self.stats.std, out=batch[i, :t])
        return batch, lengths

    def padded_frames(self, lengths: Sequence[int]) -> int:
        """Padded frames that give the same embeddings as padding to 196: the motion encoder reads
        n = T // 4 movement tokens, and token j sees frames up to 4j + 6 through the two stride-2
        convolutions (kernel 4, padding 1), so frames past 4n + 3 never reach a token that is read
        (tests/test_eval_evaluator.py checks the equality)."""
        unit = self.cfg.unit_length
        return min(self.cfg.max_motion_length, max(t // unit * unit + unit for t in lengths))

    @torch.no_grad()
    def embed_motions(self, motions: Sequence[np.ndarray], frames_per_batch: int = 12288) -> np.ndarray:
        """[N, coemb] float32 motion embeddings of raw (unnormalised) feature arrays [T_i, D]; each
        is read for T_i // 4 movement tokens, the same as when padded to 196 frames like the
        reference loader. Batches group similar lengths, pad only as far as that matters
        (`padded_frames`), hold about `frames_per_batch` frames (CPU caches like that) and run the
        movement encoder's convolutions as matrix products (`forward_eval`)."""
        n = len(motions)
        out = np.zeros((n, self.dim), np.float32)
        if n == 0:
            return out
        order = np.argsort(-np.array([len(m) for m in motions]), kind="stable")
        lo, d = 0, self.cfg.dim_pose - 4  # the movement encoder's input leaves foot contact out
        mean, std = self.stats.mean[:d], self.stats.std[:d]
        while lo < n:
            frames = self.padded_frames([len(motions[order[lo]])])  # the longest of the batch
            idx = order[lo:lo + max(1, frames_per_batch // frames)]
            buffer = np.zeros((len(idx), frames + 2, d), np.float32)  # a zero frame before and after
            lengths = np.zeros(len(idx), np.int64)
            for k, i in enumerate(idx):
                self._check_motion(int(i), motions[i], frames)
                t = lengths[k] = len(motions[i])
                np.subtract(np.asarray(motions[i])[:, :d], mean, out=buffer[k, 1:1 + t])
                np.divide(buffer[k, 1:1 + t], std, out=buffer[k, 1:1 + t])
            emb = self.matcher.encode_movement_input(torch.from_numpy(buffer).to(self.device),
                                                     torch.from_numpy(lengths))
            out[idx] = emb.float().cpu().numpy()
            lo += len(idx)
        return out


def load_evaluator(folder: str | os.PathLike, glove: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> Evaluator:
    """The evaluator of a folder laid out like the reference checkpoints (module docstring)."""
    files = EvaluatorFiles.find(folder, glove)
    matcher = load_matcher(files.checkpoint)
    stats = _read_stats(files.mean, files.std, matcher.cfg.dim_pose)
    vectorizer = WordVectorizer.load(files.glove)
    record: dict[str, Any] = {"path": str(files.root), "checkpoint": str(files.checkpoint),
                              "stats": str(files.mean.parent), "glove": str(files.glove)}
    if files.record is not None:
        try:
            record.update({k: v for k, v in json.loads(files.record.read_text()).items() if k not in record})
        except (OSError, ValueError) as error:
            raise EvaluatorError(f"{files.record} cannot be read ({error})") from None
    else:
        record["word_vectors"] = {"source": f"GloVe {GLOVE_PREFIX} at {files.glove}"}
    record["config"] = asdict(matcher.cfg)
    return Evaluator(matcher, vectorizer, stats, device, record)


__all__ = ["EvaluatorConfig", "Evaluator", "EvaluatorError", "EvaluatorFiles", "MovementConvDecoder",
           "MovementConvEncoder", "MotionEncoderBiGRUCo", "POS_ENUMERATOR", "TextEncoderBiGRUCo",
           "TextMotionMatcher", "VIP_WORDS", "WordVectorizer", "caption_tokens", "config_from_state",
           "evaluator_stats", "init_weight", "load_evaluator", "load_matcher", "pos_one_hot", "token_layout"]
