"""Command line: `python -m datasets_build <recipe> --source PATH --out DIR`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from datasets_build.builder.api import build
from datasets_build.builder.config import BuildConfig, BuildResult, OutputFolderError
from datasets_build.builder.preview import batch_export, batch_import, dry_run
from datasets_build.builder.publish import summary
from datasets_build.cli.llm_session import add_session_flags, llm_session, redact_argv, uses_llm
from datasets_build.core.errors import UserError
from datasets_build.core.flags import add_options, from_args, positive_int
from datasets_build.formats.release import LinkOutsideRelease
from datasets_build.motion.specs import SPECS, SPLITS
from datasets_build.recipes import RECIPES, MissingSegmentEncoder, Recipe
from datasets_build.recipes.options import LLMOptions
from datasets_build.synthetic.sample_release import ensure_sample_release, write_sample_release

# What the command line adds to a library error: the flag that resolves it.
HINTS = {
    OutputFolderError: "pass --overwrite to write there anyway",
    LinkOutsideRelease: "pass --follow-links to read it",
    MissingSegmentEncoder: "pass --segment-encoder RUN_DIR (train one on a humanml3d/kitml build with "
                           "`python -m models train retrieval --data BUILT_DIR --out RUN_DIR`), or --skip-segmentation",
}

DESCRIPTION = """\
Build text-to-motion releases (HumanML3D, KIT-ML) into Hugging Face Arrow datasets that load
with datasets.load_from_disk(OUT). Each sub-command is a recipe; `<recipe> --help` lists its
options. Every id of the split files ends up in the output or in OUT/rejected.jsonl with its reason.
"""
EPILOG = """\
examples:
  python -m datasets_build humanml3d --source /data/HumanML3D --out /data/built/humanml3d
  python -m datasets_build kitml --source /data/KIT-ML --out /data/built/kitml
  python -m datasets_build humanml3d --source sample --out /tmp/sample   # no licensed data needed
  python -m datasets_build mate --source /data/HumanML3D --out /data/built/mate --segment-encoder runs/tmr
  python -m datasets_build show /tmp/sample --id 000001 --out /tmp/000001.gif
  python -m datasets_build stats /tmp/sample
  python -m datasets_build humanml3d --source /shared/HumanML3D --out /shared/built/humanml3d --executor ray --ray-address auto
  python -m datasets_build export-parquet /tmp/sample --out /tmp/sample-parquet
"""


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="PATH",
                        help="release folder (new_joint_vecs/, texts/, train.txt, ...), or 'sample' "
                             "to generate (once, cached) and build the procedural sample release")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder: a DatasetDict (train/val/test) plus README.md, "
                             "rejected.jsonl, release_stats/ and build.json")
    parser.add_argument("--splits", type=split_names, default=SPLITS, metavar="NAMES",
                        help=f"comma-separated split files to build (default: {','.join(SPLITS)})")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="only the first N ids of each split, for a quick try")
    parser.add_argument("--num-proc", type=positive_int, metavar="N",
                        help="worker processes (default: 1 for small builds, else up to 4 by CPU count)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild even when the output is up to date (caches are kept), or write into a "
                             "non-empty folder that holds no earlier build: there only what a build writes is "
                             "replaced (the split and step folders, release_stats/, README.md, rejected.jsonl, "
                             "dataset_dict.json, build.json, .cache/); nothing else is touched")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first problem (naming the file, line and what is wrong) "
                             "instead of listing it in rejected.jsonl")
    parser.add_argument("--no-joints", dest="with_joints", action="store_false",
                        help="leave out new_joints/ even when the release has it")
    parser.add_argument("--follow-links", action="store_true",
                        help="read files and folders of the release that are symbolic links to places outside "
                             "it (by default such a link is refused, so nothing outside --source is read)")
    parser.add_argument("--sample-motions", type=positive_int, default=64, metavar="N",
                        help="with --source sample: base motions to generate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="with --source sample: generator seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where the chunks run: 'local' (this machine: this process, or --num-proc forked "
                             "workers) or 'ray' (Ray Data actors on a Ray cluster; --num-proc is then the number of "
                             "actors, by default the cluster's CPUs). The output is the same either way")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="the Ray cluster to run on (implies --executor ray): ray://HEAD:10001, HEAD:6379 or "
                             "auto; default: RAY_ADDRESS, else a local Ray instance on loopback for this build. --out "
                             "must then be on storage that every node mounts at the same path")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("t2m-datasets-build")
    except PackageNotFoundError:
        return "(not installed)"


def picture_path(text: str) -> Path:
    """An argparse type: a file name ending in .gif, .mp4 or .png."""
    from datasets_build.viz.skeleton import PICTURE_SUFFIXES

    if Path(text).suffix.lower() not in PICTURE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text}: use a .gif, .mp4 or .png file name")
    return Path(text)


def split_names(text: str) -> tuple[str, ...]:
    """An argparse type: `train,val` -> ("train", "val"); each name once, at least one."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names) or not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated split names such as train,val,test, got {text!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"split {repeated[0]!r} is listed more than once")
    unsafe = [name for name in names if not name.replace("_", "").replace("-", "").isalnum()]
    if unsafe:
        raise argparse.ArgumentTypeError(f"split name {unsafe[0]!r} must be letters, digits, '_' or '-'")
    return names


def _build_command(commands, name: str, help: str, description: str, recipe: str = "") -> argparse.ArgumentParser:
    """A sub-command that reads a build folder (its first argument)."""
    command = commands.add_parser(name, help=help, description=description, allow_abbrev=False)
    kind = f"{recipe} build" if recipe else "build"
    command.add_argument("built", type=Path, metavar="BUILT_DIR", help=f"output folder of a {kind}")
    return command


def make_parser() -> argparse.ArgumentParser:
    # No abbreviated options: `--llm-api-ke KEY` must not be taken for the key option (and so escape
    # the redaction of the command line written to the card).
    parser = argparse.ArgumentParser(prog="python -m datasets_build", description=DESCRIPTION, epilog=EPILOG,
                                     allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for recipe in RECIPES.values():
        sub = commands.add_parser(recipe.name, help=f"recipe: {recipe.help}", description=recipe.help,
                                  allow_abbrev=False)
        _add_build_options(sub)
        defaults = recipe.options()
        for field in dataclasses.fields(recipe.options):  # one argument group per option group
            group_options = getattr(defaults, field.name)
            group = sub.add_argument_group(group_options.title, group_options.description)
            add_options(group, type(group_options), defaults=group_options)
            if isinstance(group_options, LLMOptions):
                add_session_flags(group)
    sample = commands.add_parser(
        "sample", help="write a small synthetic release (procedural skeleton motions) in the official layout",
        description="Write a release of procedurally animated skeletons (walk, turn, jump, wave, kick, sit, "
                    "crouch, and sequences of them) with captions that describe them in time order, sub-clip "
                    "lines, mirrors, splits, Mean/Std and segments.jsonl (the true action boundaries). "
                    "Deterministic for a seed. Build it like a real release: <recipe> --source DIR.",
        allow_abbrev=False)
    sample.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write the release to")
    sample.add_argument("--dataset", choices=sorted(SPECS), default="humanml3d", help="layout (default: %(default)s)")
    sample.add_argument("--sample-motions", "--motions", dest="motions", type=positive_int, default=64, metavar="N",
                        help="base motions; mirrors double them (default: %(default)s)")
    sample.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    sample.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    show = _build_command(commands, "show", "render one motion of a build as a skeleton animation or filmstrip",
                          "Render a motion of a built dataset: .gif or .mp4 animation, or a .png filmstrip of key "
                          "poses, with the ground, the root trajectory and the caption; frames are coloured by "
                          "segment where the annotation has a segmentation.")
    show.add_argument("--id", required=True, help="motion id, e.g. 000021 or M000021")
    show.add_argument("--annotation", type=int, metavar="K",
                      help="draw only annotation K (0-based) of the motion: its frame range and caption")
    show.add_argument("--out", required=True, type=picture_path, metavar="FILE", help="a .gif, .mp4 or .png file")
    export = _build_command(commands, "export-fine", "write a finehumanml3d build in FineHumanML3D's published layout",
                            "One <id>.txt per motion, one line per coarse caption line of the release (same order) "
                            "with its tagged step descriptions; empty where no checked description exists.",
                            "finehumanml3d")
    export.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the .txt files")
    rmd = _build_command(commands, "export-remodiffuse", "write a remodiffuse build as ReMoDiffuse's database .npz",
                         "text_features, captions, motions (N, 196, D) padded, m_lengths, clip_seq_features, "
                         "train_indexes, test_indexes: drop-in for the reference code's t2m_text_train.npz. Needs "
                         "a build with --text-encoder clip.", "remodiffuse")
    rmd.add_argument("--out", required=True, type=Path, metavar="FILE", help="the .npz file to write")
    rmd.add_argument("--any-encoder", action="store_true",
                     help="accept features of another encoder (the reference code expects CLIP ViT-B/32)")
    parquet = _build_command(commands, "export-parquet", "write a build as sharded Parquet files (plain Arrow types)",
                             "One folder of part-NNNNN.parquet files per split and side dataset, motions as "
                             "list<fixed_size_list<float>[D]>, for polars, DuckDB, Spark and ray.data.read_parquet; "
                             "features.json beside them gives the way back: datasets.Dataset.from_parquet(...)"
                             ".cast(features).")
    parquet.add_argument("--out", required=True, type=Path, metavar="PARQUET_DIR", help="folder for the Parquet files")
    parquet.add_argument("--overwrite", action="store_true", help="replace a non-empty PARQUET_DIR")
    stats = _build_command(commands, "stats", "plot motion/caption length and annotation histograms of a build",
                           "Write histograms per split (motion length in seconds, caption length in words, "
                           "annotations per motion) as PNG files.")
    stats.add_argument("--out", type=Path, metavar="DIR",
                       help="folder for the plots (default: BUILT_DIR-plots beside the build, which stays as built)")
    return parser


def recipe_options(recipe: Recipe, args: argparse.Namespace) -> Any:
    """The recipe's options dataclass from the parsed flags."""
    return recipe.options(**{f.name: from_args(type(f.default), args) for f in dataclasses.fields(recipe.options)})


def run_recipe(args: argparse.Namespace, argv: list[str]) -> int:
    recipe = RECIPES[args.command]
    source_note = ""
    if args.source == "sample":
        source = ensure_sample_release(recipe.dataset, args.sample_motions, args.seed)
        source_note = f"(procedural sample release: {args.sample_motions} base motions, seed {args.seed})"
        print(f"Using the sample release in {source}", file=sys.stderr)
    else:
        source = Path(args.source)
    options = recipe_options(recipe, args)
    build_settings = dict(
        splits=args.splits, limit=args.limit,
        num_proc=args.num_proc, strict=args.strict, overwrite=args.overwrite, with_joints=args.with_joints,
        follow_links=args.follow_links,
        progress=not args.quiet, command="python -m datasets_build " + shlex.join(redact_argv(argv)),
        source_note=source_note)
    if not recipe.uses_llm:
        config = recipe.config(source, args.out, options, **build_settings)
        with _executor(args) as executor:
            return _report(build(config, executor), config)
    previewing = args.dry_run or bool(args.llm_batch_export)  # nothing is sent: no server, no segmentation
    if previewing and hasattr(options, "segmentation"):
        options = dataclasses.replace(options, segmentation=dataclasses.replace(options.segmentation,
                                                                               skip_segmentation=True))
    with llm_session(options.llm, serve=not previewing) as llm:
        config = recipe.config(source, args.out, dataclasses.replace(options, llm=llm), **build_settings)
        asking = [p for p in config.processors if uses_llm(p)]
        if args.llm_batch_import:
            print(batch_import(config, asking[0], args.llm_batch_import))  # one cache for all of them
        if args.dry_run:
            print("\n".join(dry_run(config, p) for p in asking))
            return 0
        if args.llm_batch_export:
            print(batch_export(config, asking, args.llm_batch_export))
            return 0
        with _executor(args) as executor:
            return _report(build(config, executor), config)


def _executor(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The executor that the flags ask for (None: the builder's local default); leaving it stops a
    local Ray instance that it started."""
    if args.executor != "ray" and not args.ray_address:
        return contextlib.nullcontext(None)
    from datasets_build.executor.ray import RayExecutor

    return RayExecutor(address=args.ray_address, workers=args.num_proc)


def _report(result: BuildResult, config: BuildConfig) -> int:
    """Print the summary; exit status 3 when rows are provisional (the build must be run again)."""
    print(summary(result, config.processors + config.steps))
    return 3 if not result.skipped and result.unfinished_rows else 0


def write_sample(args: argparse.Namespace) -> int:
    if args.out.exists() and any(args.out.iterdir()):
        if not args.overwrite:
            raise OutputFolderError(f"the output folder {args.out} is not empty; pass --overwrite to replace it")
        shutil.rmtree(args.out)
    write_sample_release(args.out, args.dataset, args.motions, args.seed)
    print(f"wrote a {SPECS[args.dataset].title} sample release of {2 * args.motions} motions to {args.out}; "
          f"build it with: python -m datasets_build {args.dataset} --source {args.out} --out BUILT_DIR")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said with the sub-command's own usage, not the top level's
        parser._subparsers._group_actions[0].choices[args.command].error(  # noqa: SLF001
            f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code = run_command(args, argv)
        sys.stdout.flush()  # inside the try: a reader that went away is noticed here
        return code
    except UserError as error:
        hint = next((text for kind, text in HINTS.items() if isinstance(error, kind)), "")
        print(f"error: {error}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue (finished work is cached)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head -1`): the work is done, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def run_command(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the parsed sub-command; user errors propagate to `main`."""
    if args.command == "sample":
        return write_sample(args)
    if args.command == "show":
        from datasets_build.viz.browse import show

        print(show(args.built, args.id, args.out, args.annotation, progress=True))
        return 0
    if args.command == "export-fine":
        from datasets_build.exports.finehumanml3d import export_fine

        print(export_fine(args.built, args.out))
        return 0
    if args.command == "export-remodiffuse":
        from datasets_build.exports.remodiffuse import export_remodiffuse

        written = export_remodiffuse(args.built, args.out, require_clip=not args.any_encoder)
        print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in written.items()))
        return 0
    if args.command == "export-parquet":
        from datasets_build.exports.parquet import export_parquet

        print(export_parquet(args.built, args.out, overwrite=args.overwrite))
        return 0
    if args.command == "stats":
        from datasets_build.viz.browse import stats

        print(stats(args.built, args.out or args.built.parent / f"{args.built.name}-plots"))
        return 0
    return run_recipe(args, argv)
