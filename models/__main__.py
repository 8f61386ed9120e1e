"""The models' command line.

    python -m models --help                                   # the models and their commands
    python -m models train NAME --data BUILT --out RUN [--preset tiny|paper] [--max-steps N]
                               [--device cpu|cuda] [--set KEY=VALUE ...] [--resume]
    python -m models generate --run RUN --text "a person walks" [--length FRAMES] --out OUT.npy
                              [--gif OUT.gif] [--seed S]
    python -m models evaluate --run RUN|ground-truth --data BUILT --evaluator DIR_OR_RUN
                              [--replications N] [--json OUT.json]
    python -m models evaluate retrieval --run RUN --data BUILT          # a model's own evaluation
    python -m models tune-mixture --run RUN --data BUILT --evaluator DIR   # ReMoDiffuse's mixture search
    python -m models caption --run M2T_RUN --data BUILT [--split test] --out captions.jsonl   # LaMP-M2T
    torchrun --nproc_per_node=8 -m models train NAME ...                # several GPUs

Models register themselves (`MODEL` in their package, `models.registry`); a command's module is
imported only when it runs (listing the models imports no torch) and exposes `main(argv, prog)`.
`generate` and `evaluate --run` find the model of a run folder from its checkpoint's format tag.
A `UserError` prints `error: <message>` and exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datasets_build.core.errors import UserError
from datasets_build.core.flags import add_options, from_args, option
from models.registry import COMMANDS, ModelEntry, discover, entry_for_run, load_object
from models.training.config import run_command

USAGE = ("usage: python -m models train NAME [options]\n"
         "       python -m models generate --run RUN --text TEXT --out OUT.npy [options]\n"
         "       python -m models evaluate --run RUN|ground-truth --data BUILT --evaluator DIR [options]\n"
         "       python -m models evaluate NAME [options]\n"
         "       python -m models caption --run M2T_RUN --data BUILT [options]\n"
         "       python -m models tune-mixture --run REMODIFFUSE_RUN --data BUILT --evaluator DIR [options]")
GROUND_TRUTH = "ground-truth"
LAMP_EVALUATOR = "lamp:"  # --evaluator lamp:RUN


class NotAGenerator(UserError, ValueError):
    """A run folder of a model that makes no motions."""


def registry() -> dict[str, ModelEntry]:
    return discover()


def overview(models: dict[str, ModelEntry]) -> str:
    width = max(len(name) for name in models)
    rows = []
    for name, entry in models.items():
        commands = ", ".join(c for c in COMMANDS if c in entry.commands) or "-"
        rows.append(f"  {name.ljust(width)}  {commands:<24}  {entry.summary}")
    return "\n".join([
        USAGE, "",
        "Train, sample from and evaluate text-to-motion models on datasets built by `python -m datasets_build`.",
        "", "models (name, commands, what it is):", *rows, "",
        "`python -m models COMMAND NAME --help` lists that command's options; `python -m models evaluate --help`",
        "and `python -m models generate --help` the run-folder commands. Several GPUs: torchrun --nproc_per_node=N "
        "-m models train ...",
    ])


def _usage_error(message: str) -> int:
    print(f"{USAGE}\npython -m models: error: {message}", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------- generate --run
@dataclass(frozen=True)
class GenerateOptions:
    run: str = option(help="run folder of a generator (`python -m models train NAME --out RUN`)", metavar="RUN")
    text: str = option(help="the caption to animate", metavar="TEXT")
    out: str = option(help="where to write the motion: raw features [frames, D] as .npy", metavar="OUT.npy")
    length: int = option(120, "frames to generate (20 fps for HumanML3D, 12.5 for KIT-ML)", metavar="FRAMES",
                         positive=True)
    gif: str | None = option(None, "also draw the skeleton animation (.gif, .mp4 or .png filmstrip)", metavar="OUT.gif")
    seed: int = option(0, "sampling seed")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")


def generator_settings(load: object, pairs: list[str], run: str) -> dict[str, object]:
    """`--set KEY=VALUE` pairs typed by the keyword parameters of the model's `load` (respacing, method...)."""
    import inspect
    import typing

    from datasets_build.core.flags import OptionError, parse_value

    hints = typing.get_type_hints(load)
    names = [n for n in inspect.signature(load).parameters if n not in ("run_dir", "device", "text_encoder")]
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or key not in names:
            raise OptionError(f"--set {pair!r}: the generator of {run} takes "
                              f"{', '.join(f'{n}=VALUE' for n in names) or 'no settings'}")
        out[key] = parse_value(value, hints[key], f"--set {pair!r}")
    return out


def load_generator(run: str, device: str | None, models: dict[str, ModelEntry] | None = None,
                   settings: list[str] | None = None) -> object:
    """The generator of a run folder, through the registry entry that writes its checkpoints; `settings`
    are `KEY=VALUE` keyword arguments of the model's `load` (sampling choices such as respacing)."""
    entry = entry_for_run(run, models if models is not None else registry())
    if not entry.generator:
        raise NotAGenerator(f"{run} is a {entry.name} run, and {entry.name} generates no motions")
    load = load_object(entry.generator)
    return load(run, device, **generator_settings(load, settings or [], run))


def add_generator_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a sampling setting of the model's generator, repeatable: respacing=50 method=ddim "
                             "(the diffusion models), drop_first_last=true (FineMotionDiffuse)")


def generate_main(argv: list[str] | None, prog: str = "python -m models generate") -> int:
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False, description="Generate one motion from a trained generator's run.")
    add_options(parser, GenerateOptions)
    add_generator_flags(parser)
    parser.add_argument("--step", dest="steps", action="append", default=[], metavar="TEXT",
                        help="a fine-grained step of the motion, repeatable in order (FineMotionDiffuse; without "
                             "steps it generates from the caption alone)")
    args = parser.parse_args(argv)
    a = from_args(GenerateOptions, args)
    generator = load_generator(a.run, a.device, settings=args.settings)
    import numpy as np  # after the registry: --help stays light

    if args.steps and not hasattr(generator, "use_build"):
        raise NotAGenerator(f"{a.run}: this model reads no fine-grained steps (--step)")
    extra = {"steps": [args.steps]} if args.steps else {}
    motion = np.asarray(generator.generate([a.text], [a.length], a.seed, **extra)[0], np.float32)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    np.save(a.out, motion)
    print(f"wrote {a.out}: {motion.shape[0]} frames x {motion.shape[1]} features for {a.text!r}")
    if a.gif:
        from datasets_build.motion.kinematics import features_to_joints
        from datasets_build.motion.specs import SPECS
        from datasets_build.viz.skeleton import render_motion

        dataset = next((n for n, s in SPECS.items() if s.feature_dim == motion.shape[1]), None)
        if dataset is None:
            raise NotAGenerator(f"{a.run} makes {motion.shape[1]}-d motions, neither HumanML3D's nor KIT-ML's")
        render_motion(features_to_joints(motion, dataset), dataset, Path(a.gif), a.text, SPECS[dataset].fps)
        print(f"wrote {a.gif}")
    return 0


# ----------------------------------------------------------------------------- evaluate --run
EVALUATOR_LAYOUT = """evaluator folder (--evaluator DIR), laid out like the reference checkpoints (checkpoints/t2m of
EricGuo5513/text-to-motion), or a run folder of `python -m models train evaluator`:
  DIR/text_mot_match/model/finest.tar    text_encoder / motion_encoder / movement_encoder state dicts
  DIR/meta/mean.npy, DIR/meta/std.npy    its statistics (or DIR/Comp_v6_KLD01/meta, DIR/Comp_v6_KLD005/meta)
  DIR/glove/our_vab_data.npy, our_vab_words.pkl, our_vab_idx.pkl   (or DIR/../../glove, or --glove DIR)"""


@dataclass(frozen=True)
class EvaluateOptions:
    run: str = option(help=f"a generator's run folder, or '{GROUND_TRUTH}' for the papers' Real motions row",
                      metavar=f"RUN|{GROUND_TRUTH}")
    data: str = option(help="build folder whose split is evaluated", metavar="BUILT_DIR")
    evaluator: str = option(help="evaluator folder (layout below), or lamp:RUN for a LaMP pretraining run's "
                                 "features (LaMP-R-Precision, LaMP-MM-Dist)", metavar="DIR_OR_RUN")
    split: str = option("test", "split to evaluate")
    replications: int = option(20, "repetitions of the whole evaluation (mean and 95%% interval)", metavar="N",
                               positive=True)
    paper: Literal["motiondiffuse", "remodiffuse", "momask", "lamp"] = option(
        "remodiffuse", "MultiModality caption count of a paper's code: motiondiffuse 100, remodiffuse 100 "
                       "(HumanML3D) / 50 (KIT-ML), momask and lamp 96")
    mm_captions: int | None = option(None, "MultiModality captions (default: the --paper preset's)", metavar="N")
    glove: str | None = option(None, "GloVe our_vab folder when it is not inside the evaluator folder", metavar="DIR")
    seed: int = option(0, "seed of the replications' draws and of generation")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")
    json: str | None = option(None, "also write every number (and each replication's) as JSON", metavar="OUT.json")
    quiet: bool = option(False, "no progress lines")
    bertscore: str | None = option(None, "a LaMP-M2T run: add LaMP-BertScore (generate, caption, BertScore F1 x100 "
                                         "against the caption)", metavar="M2T_RUN")
    bertscore_model: str | None = option(None, "local BertScore model folder for --bertscore (paper: roberta-large)",
                                         metavar="DIR")


def evaluate_main(argv: list[str] | None, prog: str = "python -m models evaluate") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EVALUATOR_LAYOUT, allow_abbrev=False,
        description="Score a generator (or the ground truth) with Guo et al.'s evaluator and the papers' protocol; "
                    "prints the papers' table with 95% intervals.")
    add_options(parser, EvaluateOptions)
    add_generator_flags(parser)
    args = parser.parse_args(argv)
    a = from_args(EvaluateOptions, args)
    from models.base import pick_device
    from models.eval.evaluator import load_evaluator
    from models.eval.protocol import (
        EvaluationSet, GroundTruth, ProtocolOptions, evaluate_generation, format_generation_table,
    )

    device = pick_device(a.device)
    if a.run == GROUND_TRUTH:
        name, generator = GroundTruth.name, GroundTruth()
    else:
        name, generator = Path(a.run).name, load_generator(a.run, str(device), settings=args.settings)
        if hasattr(generator, "use_build"):  # generators that read per-caption fields of the build (fine steps)
            generator.use_build(a.data, a.split)
    if a.evaluator.startswith(LAMP_EVALUATOR):  # LaMP-R-Precision / LaMP-MM-Dist: LaMP features as the evaluator
        evaluator = load_object("models.lamp.api:load_evaluator")(a.evaluator[len(LAMP_EVALUATOR):], device)
    else:
        evaluator = load_evaluator(a.evaluator, a.glove, device)
    started = time.perf_counter()
    test = EvaluationSet(a.data, evaluator, a.split, a.seed)
    options = ProtocolOptions(replications=a.replications, paper=a.paper, mm_captions=a.mm_captions, seed=a.seed)
    bar = None
    if not a.quiet:
        from tqdm import tqdm

        bar = tqdm(total=a.replications, desc="replications", leave=False, file=sys.stderr)
    report = evaluate_generation({name: generator}, test, options, (lambda _: bar.update()) if bar else None)
    if bar:
        bar.close()
    report.info["total_seconds"] = round(time.perf_counter() - started, 3)
    print(format_generation_table(report))
    print(f"{a.replications} replications in {report.info['seconds']:.1f} s (+ {report.info['setup_seconds']:.1f} s "
          "embedding the test captions and real motions once)")
    extra: dict[str, object] = {}
    if a.bertscore:
        if not a.bertscore_model:
            raise NotAGenerator("--bertscore needs --bertscore-model DIR (a local BertScore model folder)")
        if a.run == GROUND_TRUTH:
            print("LaMP-BertScore: 100.00 (the papers' Ground Truth row is fixed at 100, not computed)")
        else:
            score = load_object("models.lamp.caption:evaluate_bertscore")(generator, test, a.bertscore,
                                                                          a.bertscore_model, device, a.seed)
            extra["lamp_bertscore"] = score["lamp_bertscore"]
            print(f"LaMP-BertScore: {score['lamp_bertscore']:.2f} ({score['note']})")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"run": a.run, **report.to_json(), **extra}, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


# ----------------------------------------------------------------------------- dispatch
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview(registry()))
        return 0
    command, rest = argv[0], argv[1:]
    if command == "caption":  # LaMP-M2T: caption a build's motions, with the captioning metrics
        caption = importlib.import_module("models.lamp.caption")
        return run_command(lambda args: caption.main(args, prog="python -m models caption"), rest)
    if command == "tune-mixture":  # ReMoDiffuse's condition-mixture search, saved into the run
        tune = importlib.import_module("models.remodiffuse.tune")
        return run_command(lambda args: tune.main(args, prog="python -m models tune-mixture"), rest)
    if command not in COMMANDS:
        return _usage_error(f"unknown command {command!r} (choose from {', '.join(COMMANDS)})")
    if command == "generate" and (not rest or rest[0].startswith("-")):
        return run_command(generate_main, rest)
    if command == "evaluate" and (not rest or rest[0].startswith("-")):
        return run_command(evaluate_main, rest)
    models = registry()
    if not rest or rest[0].startswith("-"):
        return _usage_error(f"{command} needs a model name: {', '.join(models)}")
    name, options = rest[0], rest[1:]
    if name not in models:
        return _usage_error(f"no model named {name!r} (models: {', '.join(models)})")
    if command in ("evaluate", "generate") and command not in models[name].commands and models[name].generator:
        # a generator without its own command: the shared ones, which find the model from the run folder
        run_main = evaluate_main if command == "evaluate" else generate_main
        return run_command(lambda args: run_main(args, prog=f"python -m models {command} {name}"), options)
    if command not in models[name].commands:
        return _usage_error(f"{name} has no {command} command (it has {', '.join(models[name].commands)})")
    module = importlib.import_module(models[name].commands[command])
    return run_command(lambda args: module.main(args, prog=f"python -m models {command} {name}"), options)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers warn after the loader forks
    sys.exit(main())
