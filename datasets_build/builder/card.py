"""The dataset card (README.md with YAML metadata) written into every build."""

from __future__ import annotations

import datasets
import yaml

import shlex

from datasets_build.builder.citations import SOURCE_DATASETS, citations_for
from datasets_build.builder.config import BuildConfig, BuildResult
from datasets_build.builder.plan import SOURCE_FOLDERS
from datasets_build.core.hashing import folder_signature
from datasets_build.formats.release import Release
from datasets_build.formats.schema import COLUMN_DOCS

LICENSE_NOTE = (
    "The motions derive from AMASS and HumanAct12 (HumanML3D) or the KIT Motion-Language Dataset "
    "(KIT-ML). Their terms apply to this build: AMASS is licensed for non-commercial research only, "
    "and every user must accept the AMASS license at amass.is.tue.mpg.de themselves. The captions "
    "follow the terms of the HumanML3D / KIT-ML releases. Do not redistribute this build."
)


LICENSE_LINK = "https://amass.is.tue.mpg.de/license.html"


def metadata(config: BuildConfig, release: Release, features: datasets.Features, result: BuildResult) -> dict:
    """The card's YAML header: valid Hugging Face dataset card metadata, with a `configs` entry so that
    `datasets.load_dataset(folder)` reads the splits under their own names. Empty splits are left
    out of `configs` (an Arrow file without rows cannot be loaded that way); the card says so."""
    spec = release.spec
    motions = sum(c["motions"] for c in result.counts.values())
    loadable = [s for s, c in result.counts.items() if c["motions"]]
    return {
        "language": ["en"],
        "license": "other",
        "license_name": "amass-and-source-dataset-terms",
        "license_link": LICENSE_LINK,
        "pretty_name": f"{spec.title} ({config.recipe} recipe)",
        "task_categories": ["text-to-3d"],
        "tags": ["text-to-motion", "motion", spec.name, f"recipe:{config.recipe}"],
        "size_categories": [_size_category(motions)],
        "source_datasets": SOURCE_DATASETS.get(spec.name, []),
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"{s}/data-*.arrow"} for s in loadable]}],
        # Features only: declared splits would be verified against `configs` (and need byte sizes);
        # the counts are in the card's table.
        "dataset_info": {"features": features._to_yaml_list()},
    }


def _size_category(count: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < limit:
            return name
    return "1M<n<10M"


def render(config: BuildConfig, release: Release, features: datasets.Features, result: BuildResult,
           rejected: dict[str, int], has_stats: bool) -> str:
    spec = release.spec
    empty = [s for s, c in result.counts.items() if not c["motions"]]
    cited = [key for step in config.processors + config.steps for key in step.cites]
    citations = "\n\n".join(f"```bibtex\n{entry}\n```" for entry in citations_for(spec.name, cited))
    empty_note = (f"\nThe split(s) {', '.join(empty)} hold no motion: `load_from_disk` gives them as empty "
                  "datasets; `load_dataset` leaves them out.\n" if empty else "")
    rows = "\n".join(
        f"| {s} | {c['motions']:,} | {c['annotations']:,} | {c['subclips']:,} | {c['frames']:,} |"
        for s, c in result.counts.items()
    )
    columns = "\n".join(
        f"- `{name}`: {COLUMN_DOCS.get(name, _processor_doc(name, config))}" for name in features
    )
    processors = "\n".join(
        f"- `{p.name}` version {p.version}: outputs {', '.join(f'`{c}`' for c in p.outputs)}"
        for p in config.processors
    ) or "- none: the release as read and validated"
    processors += "".join(
        f"\n- dataset step `{s.name}` version {s.version}: writes `{s.name}/` next to the splits"
        + (f" and adds {', '.join(f'`{c}`' for c in s.columns)}" if s.columns else "") for s in config.steps)
    processors += "".join(f"\n\n{step.card_note}" for step in config.processors + config.steps if step.card_note)
    rejected_lines = "\n".join(f"- {reason}: {count:,}" for reason, count in rejected.items()) or "- none"
    stats = (
        "The release's `Mean.npy` / `Std.npy` are saved in `release_stats/` (one row, columns `mean` "
        "and `std`); read them with `datasets_build.load_release_stats(path)`. They are the release's "
        "statistics, not a model's or the evaluator's: keep those separate."
        if has_stats else "The release had no `Mean.npy` / `Std.npy`; none are saved."
    )
    body = f"""# {spec.title}, built by datasets_build

{LICENSE_NOTE}

## Load

```python
import datasets
ds = datasets.load_from_disk("path/to/this/folder")   # DatasetDict: {", ".join(result.counts)}
ds = datasets.load_dataset("path/to/this/folder")     # the same splits through the Arrow loader
motion = ds["train"].with_format("numpy")[0]["motion"]   # float32 [length, {spec.feature_dim}]
```
{empty_note}
One row per motion id; sub-clip captions stay annotations of their motion (use
`datasets_build.flatten_samples(ds["train"])` for the sample list of the reference loaders).
Features are stored exactly as in the release (float64 copies cast to float32); no length
filter is applied: filters belong to the training loader.

## Counts

| split | motions | annotations | sub-clips | frames |
|---|---|---|---|---|
{rows}

## Columns

{columns}

## Statistics

{stats}

## How it was built

- recipe: `{config.recipe}`; dataset: {spec.title} at {spec.fps:g} fps, {spec.feature_dim}-d features
- source: a {spec.title} release {config.source_note} (file listing signature `{folder_signature(release.root, SOURCE_FOLDERS)}`)
- command: `{_without_local_paths(config.command) or "(API call)"}`
- datasets {datasets.__version__}; processors and dataset steps:

{processors}

## Rejected

Every id of the split files is either a row here or a line of `rejected.jsonl` (with the file,
line and reason). Caption lines that cannot be used are listed there too; their motion stays
when at least one caption line is usable.

{rejected_lines}

## Citation

{citations}
"""
    header = yaml.safe_dump(metadata(config, release, features, result), sort_keys=False, allow_unicode=True)
    return "---\n" + header + "---\n\n" + body


def _processor_doc(column: str, config: BuildConfig) -> str:
    for processor in config.processors:
        if column in processor.outputs:
            return f"added by processor `{processor.name}` (version {processor.version})"
    for step in config.steps:
        if column in step.columns:
            return f"added by dataset step `{step.name}` (version {step.version})"
    return ""


def _without_local_paths(command: str) -> str:
    """The command with each absolute path shortened to its last part (a card names no machine's
    folders): `--source /data/x/HumanML3D` -> `--source .../HumanML3D`."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    shown = []
    for word in words:
        flag, eq, value = word.partition("=") if word.startswith("--") else ("", "", word)
        if value.startswith(("/", "~")):
            value = ".../" + value.rstrip("/").rsplit("/", 1)[-1]
        shown.append(flag + eq + value)
    return shlex.join(shown)
