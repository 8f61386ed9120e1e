"""A build whose processor could not finish some rows (an LLM endpoint that was down) says so,
is not taken as up to date, and a re-run redoes only those rows."""

import dataclasses
import os
from typing import ClassVar

from datasets import Features, Value

from conftest import run_build
from datasets_build.builder.publish import summary
from datasets_build.formats.built import read_build_record
from processors import Processor


@dataclasses.dataclass(frozen=True)
class Answer(Processor):
    """Answers only while the file `switch` exists, like a server that may be down."""

    name: ClassVar[str] = "answer"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("id",)
    outputs: ClassVar[Features] = Features({"answer": Value("string")})
    cacheable: ClassVar[bool] = True
    switch: str = ""

    def __call__(self, batch):
        up = os.path.exists(self.switch)
        self.counters["asked"] += len(batch["id"])
        return {"answer": [f"answer for {i}" if up or i.endswith("1") else "error" for i in batch["id"]]}

    def unfinished(self, row):
        return row["answer"] == "error"


def test_unfinished_rows_are_reported_and_redone_on_the_next_run(release, tmp_path):
    source, out, switch = release(num_motions=6), tmp_path / "out", tmp_path / "server-up"
    processor = Answer(switch=str(switch))
    first = run_build(source, out, processors=(processor,))
    total = sum(c["motions"] for c in first.counts.values())
    assert 0 < first.unfinished_rows < total
    assert "INCOMPLETE" in summary(first) and read_build_record(out)["complete"] is False
    switch.touch()  # the server is back
    second = run_build(source, out, processors=(processor,))
    assert not second.skipped and second.unfinished_rows == 0
    assert second.counters["answer"]["asked"] == first.unfinished_rows  # answered rows came from the cache
    assert read_build_record(out)["complete"] is True
    assert run_build(source, out, processors=(processor,)).skipped
