"""The dataset card (README.md with YAML metadata) written into every build."""

from __future__ import annotations

import datasets
import yaml

from datasets_build.builder.config import BuildConfig, BuildResult
from datasets_build.formats.release import Release
from datasets_build.formats.schema import COLUMN_DOCS

LICENSE_NOTE = (
    "The motions derive from AMASS and HumanAct12 (HumanML3D) or the KIT Motion-Language Dataset "
    "(KIT-ML). Their terms apply to this build: AMASS is licensed for non-commercial research only, "
    "and every user must accept the AMASS license at amass.is.tue.mpg.de themselves. The captions "
    "follow the terms of the HumanML3D / KIT-ML releases. Do not redistribute this build."
)


def render(config: BuildConfig, release: Release, features: datasets.Features, result: BuildResult,
           rejected: dict[str, int], has_stats: bool) -> str:
    spec = release.spec
    metadata = {
        "license": "other",
        "license_name": "amass-and-source-dataset-terms",
        "license_details": LICENSE_NOTE,
        "pretty_name": f"{spec.title} ({config.recipe} recipe)",
        "tags": ["text-to-motion", "motion", spec.name, f"recipe:{config.recipe}"],
        "dataset_info": {
            "features": features._to_yaml_list(),
            "splits": [{"name": s, "num_examples": c["motions"]} for s, c in result.counts.items()],
        },
    }
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
ds = datasets.load_from_disk("{config.out}")   # DatasetDict: {", ".join(result.counts)}
motion = ds["train"].with_format("numpy")[0]["motion"]   # float32 [length, {spec.feature_dim}]
```

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
- source: `{config.source}` {config.source_note}
- command: `{config.command or "(API call)"}`
- datasets {datasets.__version__}; processors and dataset steps:

{processors}

## Rejected

Every id of the split files is either a row here or a line of `rejected.jsonl` (with the file,
line and reason). Caption lines that cannot be used are listed there too; their motion stays
when at least one caption line is usable.

{rejected_lines}
"""
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def _processor_doc(column: str, config: BuildConfig) -> str:
    for processor in config.processors:
        if column in processor.outputs:
            return f"added by processor `{processor.name}` (version {processor.version})"
    for step in config.steps:
        if column in step.columns:
            return f"added by dataset step `{step.name}` (version {step.version})"
    return ""
