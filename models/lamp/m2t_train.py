"""Train LaMP-M2T (motion captioning: LaMP's queries as the prefix of a LoRA-adapted causal LM, MODELS.md 5.4).

    python -m models train lamp-m2t --data built/humanml3d --lamp runs/lamp --lm models/opt-2.7b --out runs/m2t
        [--preset tiny|paper] [--epochs N] [--batch-size B] [--lr LR] [--max-steps N] [--resume]

`--lamp` is a `python -m models train lamp` run (its frozen VQ encoder, motion projection, query tokens and
Q-Former make the prefix); `--lm` a local folder of any `transformers` causal LM with its tokenizer (the
paper: OPT-2.7b). The paper gives no M2T schedule; the defaults are [inferred]: AdamW lr 1e-4, weight decay
0.05 (BLIP-2), batch 32, 10 epochs, gradient clipping 1.0, bf16 autocast on CUDA (the LM loaded in bf16).

RUN_DIR receives `checkpoint.pt` (every epoch: the trained parameters only, i.e. LoRA, `opt_proj` and the
Q-Former when trained, plus the whole LaMP network so the run does not depend on the LaMP folder; the LM
itself is read from `--lm` again, whose path is recorded), `config.json` and `log.jsonl`. Each epoch
reseeds from (seed, epoch): with `--num-workers 0` a resumed run repeats the uninterrupted one.
`python -m models caption --run RUN_DIR --data BUILT` captions a build (models.lamp.caption).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from datasets_build.core.errors import UserError
from datasets_build.core.flags import option
from datasets_build.text.torch_compat import ensure_torchvision_importable
from models import base
from models.base import CheckpointFormat, config_from_dict, restore_rng_state, seed_everything
from models.lamp.api import FORMAT as LAMP_FORMAT, build_from_state, checkpoint_dir
from models.lamp.m2t import LaMPM2T, M2TConfig
from models.lamp.pretrain import LaMP
from models.training import loop
from models.training.config import Preset, TrainOptions, parse_train_args, run_command
from models.training.data import DataError, DataOptions, MotionDataset, dataset_name, make_loader

FORMAT = CheckpointFormat("lamp-m2t", 1)


class M2TSetupError(UserError, ValueError):
    """A missing or unusable --lamp / --lm folder."""


@dataclass
class TrainConfig(TrainOptions):
    """TrainOptions with LaMP-M2T's [inferred] schedule (the paper gives none, MODELS.md 5.4)."""

    lamp: str | None = option(None, "the LaMP pretraining run (`python -m models train lamp`)", metavar="LAMP_RUN")
    lm: str | None = option(None, "local folder of a transformers causal LM and its tokenizer (paper: OPT-2.7b)",
                            metavar="DIR")
    lm_dtype: str = option("auto", "the LM's weights: auto (bfloat16 on CUDA, float32 elsewhere), float32, "
                                   "bfloat16, float16")
    epochs: int = option(10, "total epochs [inferred]", metavar="N", positive=True)
    batch_size: int = option(32, "samples per optimizer step [inferred]", metavar="B", positive=True)
    lr: float = option(1e-4, "AdamW learning rate [inferred]")
    weight_decay: float = option(0.05, "AdamW weight decay [inferred: BLIP-2]")
    grad_clip: float | None = option(1.0, "clip the gradient norm to this (0: no clipping)")


PRESETS = {
    "tiny": Preset("the CPU test size (LoRA r 4, alpha 8; a tiny LM folder)", model={"lora_r": 4, "lora_alpha": 8},
                   train={"epochs": 5, "batch_size": 8, "lr": 1e-3, "num_workers": 0}),
    "paper": Preset("LaMP's adapters (the defaults: LoRA r 16, alpha 32, dropout 0.05 on q_proj/v_proj; beam 5)"),
}


def dtype_of(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise M2TSetupError(f"--lm-dtype {name!r} is not one of auto, {', '.join(table)}")
    return table[name]


def load_lm(folder: str | os.PathLike, dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
    """(causal LM, tokenizer) of a local folder; no hub access."""
    ensure_torchvision_importable()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise M2TSetupError(f"{path} is not a local transformers model folder (no config.json): --lm wants a saved "
                            "causal LM with its tokenizer, e.g. OPT-2.7b")
    lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    return lm, AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def lamp_record(lamp: LaMP) -> dict[str, Any]:
    """The LaMP network as checkpoint entries `build_from_state` reads back."""
    return {"model_config": lamp.cfg.__dict__.copy(), "vq_config": lamp.vq.cfg.__dict__.copy(),
            "stats": lamp.vq.stats.state_dict(), "model": lamp.state_dict()}


class TrainedState:
    """What `base.save_checkpoint` stores as the model: the trained parameters only (LoRA, opt_proj, ...)."""

    def __init__(self, model: LaMPM2T) -> None:
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        names = set(self.model.trainable_names())
        return {k: v for k, v in self.model.state_dict().items() if k in names}


def load_trained(model: LaMPM2T, state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    expected = set(model.trainable_names())
    if set(state) != expected:
        raise base.CheckpointError(f"{source} holds other trained M2T parameters than this model has (LoRA targets "
                                   "or train_qformer differ from the run's settings)")
    model.load_state_dict(state, strict=False)


def build(cfg: M2TConfig, lamp: LaMP, lm_folder: str, dtype: torch.dtype) -> LaMPM2T:
    lm, tokenizer = load_lm(lm_folder, dtype)
    return LaMPM2T(cfg, lamp, lm, tokenizer)


def rebuild(state: dict[str, Any], source: str | os.PathLike, device: torch.device, lm: str | None = None,
            lm_dtype: str | None = None) -> tuple[LaMPM2T, str]:
    """The captioner of a checkpoint: LaMP from the checkpoint, the LM from `lm` or its recorded folder."""
    lamp = build_from_state(state["lamp"], source)
    folder = lm or state["lm"]
    model = build(config_from_dict(M2TConfig, state["model_config"], source), lamp, folder,
                  dtype_of(lm_dtype or state.get("lm_dtype", "auto"), device))
    load_trained(model, state["model"], source)
    return model, folder


def save_checkpoint(run_dir: Path, *, model: LaMPM2T, optimizer: torch.optim.Optimizer | None, epoch: int, step: int,
                    train_config: TrainConfig, data_options: Any, lm: str, lm_dtype: str) -> Path:
    return base.save_checkpoint(run_dir, FORMAT, model=TrainedState(model), model_config=model.cfg,
                                train_config=train_config, optimizer=optimizer, epoch=epoch, step=step,
                                configs={"data_options": data_options, "lm": str(lm), "lm_dtype": lm_dtype},
                                extra={"lamp": lamp_record(model.lamp)})


def train(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.out)
    with loop.run_folder(run_dir):
        return _train(cfg, run_dir)


def _open(cfg: TrainConfig, run_dir: Path, device: torch.device):
    state = loop.open_run(run_dir, FORMAT, cfg.resume)
    if state:
        model, lm = rebuild(state, run_dir, device, cfg.lm)
        return state, model, config_from_dict(DataOptions, state["data_options"], run_dir), lm, state["lm_dtype"]
    if not cfg.lamp or not cfg.lm:
        raise M2TSetupError("LaMP-M2T needs --lamp LAMP_RUN (`python -m models train lamp`) and --lm DIR (a local "
                            "causal LM folder)")
    folder = checkpoint_dir(cfg.lamp)
    lamp = build_from_state(base.load_checkpoint(folder, LAMP_FORMAT), base.checkpoint_path(folder))
    model = build(M2TConfig(**cfg.model), lamp, cfg.lm, dtype_of(cfg.lm_dtype, device))
    options = DataOptions.for_dataset(dataset_name(cfg.data), max_motion_length=lamp.cfg.max_motion_length)
    return None, model, options, str(Path(cfg.lm).resolve()), cfg.lm_dtype


def _train(cfg: TrainConfig, run_dir: Path) -> Path:
    device = base.pick_device(cfg.device)
    seed_everything(cfg.seed)
    state, model, options, lm, lm_dtype = _open(cfg, run_dir, device)
    train_set = MotionDataset(cfg.data, cfg.split, stats=model.lamp.vq.stats, options=options)
    if len(train_set) < 1:
        raise DataError(f"split {cfg.split!r} of {cfg.data} has no samples after the length filters")
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, step = 0, 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state.get("rng"))
        start_epoch, step = int(state["epoch"]), int(state["step"])
    loader = make_loader(train_set, min(cfg.batch_size, len(train_set)), shuffle=True, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda")
    book = loop.Bookkeeping(run_dir, device, loop.Dist(), step=step, log_every=cfg.log_every,
                            max_steps=cfg.max_steps, progress=cfg.progress)
    parts = "LoRA, opt_proj" + (", Q-Former" if model.cfg.train_qformer else "")
    book.announce("lamp-m2t", model, len(loader), cfg.epochs - start_epoch,
                  line=f"lamp-m2t: {sum(p.numel() for p in params):,} trained parameters ({parts}), "
                       f"{len(loader)} steps per epoch")

    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(cfg.seed * 100_003 + epoch)  # shuffle, crops, captions, dropout
        model.train()
        for batch in book.batches(loader, epoch, cfg.epochs):
            with loop.autocast(device):
                losses = model(batch["motion"].to(device, non_blocking=True), batch["caption"])
            if book.optimize(losses, model, optimizer, cfg.grad_clip):
                break
        summary = book.end_epoch()
        if cfg.progress:
            print(f"epoch {epoch + 1}: loss {summary.get('loss', float('nan')):.4f}", file=sys.stderr)
        save_checkpoint(run_dir, model=model, optimizer=optimizer, epoch=epoch + 1, step=book.step, train_config=cfg,
                        data_options=options, lm=lm, lm_dtype=lm_dtype)
        if book.finished:
            break
    book.finish()
    return run_dir


def main(argv: list[str] | None = None, prog: str = "python -m models train lamp-m2t") -> int:
    cfg = parse_train_args(argv, prog, __doc__.split("\n\n")[0], TrainConfig, M2TConfig, PRESETS)
    run_dir = train(cfg)
    print(f"trained LaMP-M2T into {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))


def write_tiny_lm(folder: str | os.PathLike, captions: list[str], hidden: int = 32, layers: int = 2,
                  vocab_size: int = 300, seed: int = 0) -> Path:
    """A random tiny OPT and a byte-level BPE tokenizer trained on `captions`, saved as an LM folder (the
    CPU tests, the tiny preset's end-to-end runs and the benchmark; real runs pass a downloaded LM)."""
    ensure_torchvision_importable()
    from tokenizers import ByteLevelBPETokenizer
    from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(captions), vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="</s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    lm = OPTForCausalLM(OPTConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                                  ffn_dim=2 * hidden, num_attention_heads=2, word_embed_proj_dim=hidden,
                                  max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    with torch.no_grad():  # unit-scale (tied) embeddings: with BERT-style 0.02 the output logits stay near uniform
        lm.get_input_embeddings().weight.normal_(0.0, 0.25)
    lm.save_pretrained(str(folder))
    return folder


def benchmark_step(preset: str, data: str, batch_size: int, device: torch.device):
    """(one optimizer step on a batch, its loader) for `benchmarks/train_step.py`: a random LaMP (tiny, or the
    BERT-base Q-Former for paper) over a random VQ-VAE, and a tiny random OPT (no LM download; with the paper
    preset the LoRA and prefix settings are the paper's)."""
    import tempfile

    from models.lamp.pretrain import LaMPConfig
    from models.lamp.train import BENCHMARK_VQ, PRESETS as LAMP_PRESETS
    from models.training.data import compute_stats
    from models.vq.model import VQVAE, VQVAEConfig

    stats = compute_stats(data, "train")
    vq = VQVAE(VQVAEConfig(**{**BENCHMARK_VQ.get(preset, {}), "motion_dim": len(stats.mean)}))
    vq.stats = stats
    lamp_model = LAMP_PRESETS["tiny" if preset == "tiny" else "paper"].model
    lamp = LaMP(LaMPConfig(**{**lamp_model, "vocab_size": 64, "bos_token_id": 63, "motion_width": vq.cfg.code_dim,
                              "codebook_size": vq.cfg.nb_code}), vq)
    dataset = MotionDataset(data, "train", stats=stats, options=DataOptions.for_dataset(dataset_name(data)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_lm(Path(tmp) / "lm", [c for i in range(len(dataset)) for c in dataset.captions(i)])
        model = build(M2TConfig(**PRESETS[preset].model), lamp, str(folder), torch.float32).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**6)
    loader = make_loader(dataset, batch_size, sampler=sampler, num_workers=0)

    def step(batch: dict) -> None:
        model.train()
        with loop.autocast(device):
            losses = model(batch["motion"].to(device), batch["caption"])
        loop.optimizer_step(losses["loss"], model, optimizer, 1.0)

    return step, loader
