"""`export-fine`: a finehumanml3d build in FineHumanML3D's published layout.

One `<id>.txt` per motion (mirrored ids too); one line per coarse caption line of the release's
caption file, in the same order, holding that caption's tagged step descriptions on one line
(`<step 1: title>...</step 1: title> <step 2: ...>...`); an empty line where no checked
description exists (the check failed, the request failed, or the caption line was rejected).
"""

from __future__ import annotations

from pathlib import Path

from datasets_build.formats.built import read_rejections, require_built
from processors.llm.fine_check import format_steps
from processors.llm.fine_steps import steps_of


def export_fine(built: Path, out: Path) -> str:
    ds = require_built(built, "fine", recipe="finehumanml3d")
    # Rejected caption lines keep their place as empty lines.
    rejected_lines: dict[str, set[int]] = {}
    for entry in read_rejections(built):
        if entry["level"] == "annotation" and entry["line"]:
            rejected_lines.setdefault(entry["id"], set()).add(entry["line"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = written = empty = 0
    for table in ds.values():
        for row in table.select_columns(["id", "annotations", "fine"]):
            lines = {a["line"]: (format_steps(steps_of(f)) if f["status"] == "checked" else "")
                     for a, f in zip(row["annotations"], row["fine"])}
            lines.update({n: "" for n in rejected_lines.get(row["id"], ())})
            text = [lines[n] for n in sorted(lines)]
            (out / f"{row['id']}.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
            files += 1
            written += sum(bool(t) for t in text)
            empty += sum(not t for t in text)
    return f"wrote {files:,} files to {out}: {written:,} descriptions, {empty:,} empty lines (no checked answer)"
