"""Word localisation of a trained MATE run: where a word attends over a motion's frames, next to the
segment the joint segmentation gave its sub-text.

    python -m models evaluate mate --run runs/mate --data built/mate --id 000001 --word walk --out att.png
        [--annotation K] [--device cpu]

The picture plots, over the motion's frames, the word's attention weights (Eq. 2, averaged over
heads) with the run's prior, the same without a prior (lambda = 0: what the features alone point
at), the prior itself (Eq. 4), and shades every segment of the caption with its sub-text, the
word's own darker. The printed line gives the attention mass inside the word's segment.

(The pictures use matplotlib directly: `datasets_build.viz.plots.pyplot` lives in a layer above the
model packages, which may not import it.)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets_build.core.errors import MissingDependency, UserError
from datasets_build.core.flags import add_options, from_args, option
from models.mate.api import load
from models.mate.data import find_segment, surface_word
from models.training.config import run_command
from models.training.data import open_split


class LocalizationError(UserError, ValueError):
    """A motion id, annotation or word that the build does not have."""


@dataclass(frozen=True)
class LocalizationOptions:
    run: str = option(help="run folder written by `python -m models train mate`", metavar="RUN_DIR")
    data: str = option(help="a mate build (with segmentation)", metavar="BUILT_DIR")
    id: str = option(help="the motion id (a row's `id`)", metavar="ID")
    word: str = option(help="the word (or its lemma) of the caption to localise", metavar="WORD")
    out: str = option(help="the picture to write (.png)", metavar="OUT.png")
    annotation: int | None = option(None, "which caption of the motion (default: the first containing the word)",
                                    metavar="K")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")


def find_row(data: str, motion_id: str) -> dict[str, Any]:
    import datasets

    try:
        build = datasets.load_from_disk(str(data))
    except FileNotFoundError:
        raise LocalizationError(f"{data} is not a built dataset") from None
    splits = build if isinstance(build, datasets.DatasetDict) else {"train": build}
    for name in splits:
        split = open_split(build, name) if isinstance(build, datasets.DatasetDict) else build
        ids = split["id"]
        if motion_id in ids:
            return split[ids.index(motion_id)]
    raise LocalizationError(f"no motion with id {motion_id!r} in {data}")


def pick_annotation(row: dict[str, Any], word: str, annotation: int | None) -> tuple[int, str, str]:
    """(annotation index, the caption's surface word, its lemma)."""
    candidates = range(len(row["annotations"])) if annotation is None else [annotation]
    if annotation is not None and not 0 <= annotation < len(row["annotations"]):
        raise LocalizationError(f"motion {row['id']} has {len(row['annotations'])} captions; --annotation "
                                f"{annotation} is not one of them")
    for k in candidates:
        caption = row["annotations"][k]["caption"]
        for lemma in row["lemmas"][k]:
            surface = surface_word(caption, lemma)
            if word.lower() in (lemma, surface):
                return k, surface, lemma
    raise LocalizationError(f"no caption of motion {row['id']} contains {word!r}"
                            + ("" if annotation is None else f" (annotation {annotation})"))


@torch.no_grad()
def localize(run_dir: str, data: str, motion_id: str, word: str, annotation: int | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Attention (with and without prior), prior and segments of `word` over motion `motion_id`."""
    run = load(run_dir, device)
    row = find_row(data, motion_id)
    k, surface, lemma = pick_annotation(row, word, annotation)
    ann = row["annotations"][k]
    start, end = int(ann["start_frame"]), int(ann["end_frame"]) or int(row["length"])
    frames = min(end - start, run.model.cfg.max_length)
    motion = run.stats.normalize(np.asarray(row["motion"], np.float32)[start:start + frames])
    subtexts = (row.get("subtexts") or [None] * (k + 1))[k]
    segmentation = (row.get("segmentation") or [None] * (k + 1))[k]
    segment = find_segment(surface, lemma, subtexts, segmentation)
    s, e = (segment[0] - start, segment[1] - start) if segment else (0, frames)
    x = torch.as_tensor(motion, device=run.device)[None]
    mask = torch.ones(1, frames, dtype=torch.bool, device=run.device)
    seg = (torch.tensor([s]), torch.tensor([e]), torch.tensor([segment is not None]))
    out = run.model.attend([surface], x, mask, *(t.to(run.device) for t in seg))
    _, plain_weights = run.model.word_attention(out["query"][:, None], out["frames"], mask)  # lambda = 0
    segments = [(int(g["start_frame"]) - start, int(g["end_frame"]) - start, g["text"])
                for g in (segmentation or {}).get("segments", [])]
    weights = out["weights"][0].float().cpu().numpy()
    inside = float(weights[max(s, 0):max(e, 0)].sum()) if segment else float("nan")
    return {"caption": ann["caption"], "word": surface, "lemma": lemma, "annotation": k, "segment": segment and (s, e),
            "segments": segments, "attention": weights, "attention_no_prior": plain_weights[0, 0].float().cpu().numpy(),
            "prior": out["prior"][0].float().cpu().numpy(), "mass_in_segment": inside, "fps": float(row["fps"])}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency("pictures need matplotlib: pip install -e '.[viz]'") from None
    return plt


def plot(result: dict[str, Any], out: str | Path) -> Path:
    plt = _pyplot()
    frames = np.arange(len(result["attention"]))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for i, (s, e, text) in enumerate(result["segments"]):
        own = result["segment"] is not None and (s, e) == tuple(result["segment"])
        ax.axvspan(s, e, color="tab:orange" if own else ("0.85" if i % 2 else "0.93"), alpha=0.35 if own else 1.0)
        ax.text((s + e) / 2, 1.0, text, ha="center", va="bottom", fontsize=7, transform=ax.get_xaxis_transform(),
                wrap=True)
    ax.plot(frames, result["attention"], color="tab:blue", label="attention (with prior)")
    ax.plot(frames, result["attention_no_prior"], color="tab:green", ls="--", label="attention (no prior)")
    prior_axis = ax.twinx()
    prior_axis.plot(frames, result["prior"], color="tab:red", ls=":")
    prior_axis.set_ylim(0, 1.05)
    prior_axis.set_ylabel("prior (Eq. 4)", color="tab:red")
    ax.plot([], [], color="tab:red", ls=":", label="prior (right axis)")
    ax.set_xlabel("frame")
    ax.set_ylabel("attention weight")
    ax.set_xlim(0, max(len(frames) - 1, 1))
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"'{result['word']}' in: {result['caption']}", fontsize=9, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 0.92))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None, prog: str = "python -m models evaluate mate") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_options(parser, LocalizationOptions)
    a = from_args(LocalizationOptions, parser.parse_args(argv))
    result = localize(a.run, a.data, a.id, a.word, a.annotation, a.device)
    path = plot(result, a.out)
    where = ("no segment for it (no prior)" if result["segment"] is None else
             f"segment frames {result['segment'][0]}-{result['segment'][1]}, "
             f"{result['mass_in_segment']:.0%} of its attention inside")
    print(f"{path}: '{result['word']}' (lemma {result['lemma']}) in caption {result['annotation']}: "
          f"{result['caption']!r}; {where}; peak at frame {int(result['attention'].argmax())}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(run_command(main))
