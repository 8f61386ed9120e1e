"""`export-parquet`: plain Arrow types, shards, readers of the ecosystem, and the way back."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_build
from datasets_build.cli.main import main
from datasets_build.exports.parquet import built_datasets, export_parquet
from datasets_build.synthetic.noise_release import write_synthetic_release


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small build with rejections: splits, release_stats/, rejected.jsonl, README.md."""
    tmp = tmp_path_factory.mktemp("parquet")
    root = write_synthetic_release(tmp / "release", "humanml3d", num_motions=8, seed=5)
    (root / "texts" / "000001.txt").unlink()
    run_build(root, tmp / "built")
    return tmp / "built"


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "parquet"
    # Tiny row groups and files, so that a split is cut into several shards.
    export_parquet(built, out, file_bytes=1, row_group_bytes=200_000)
    return out


def test_plain_arrow_types_in_shards(built, exported):
    train = sorted((exported / "train").glob("*.parquet"))
    assert len(train) > 1 and train[0].name == "part-00000.parquet"
    schema = pq.read_schema(train[0])
    assert schema.field("motion").type == pa.list_(pa.list_(pa.float32(), 263))
    assert schema.field("joints").type == pa.list_(pa.list_(pa.list_(pa.float32(), 3), 22))
    assert b"huggingface" not in (schema.metadata or {})

    def no_extension(arrow_type):
        assert not isinstance(arrow_type, pa.ExtensionType)
        for i in range(arrow_type.num_fields):
            no_extension(arrow_type.field(i).type)

    for path in exported.rglob("*.parquet"):
        for field in pq.read_schema(path):
            no_extension(field.type)
    manifest = json.loads((exported / "export.json").read_text())
    assert manifest["datasets"]["train"]["files"] == [p.name for p in train]
    assert set(manifest["datasets"]) == {"train", "val", "test", "release_stats"}
    assert (exported / "README.md").read_text() == (built / "README.md").read_text()  # the license travels
    assert (exported / "rejected.jsonl").read_text() == (built / "rejected.jsonl").read_text() != ""


def test_round_trip_keeps_every_value(built, exported, tmp_path):
    features = json.loads((exported / "features.json").read_text())
    datasets.disable_progress_bars()
    try:
        names = []
        for name, original in built_datasets(built):
            names.append(name)
            schema = datasets.Features.from_dict(features[name])
            if len(original):
                back = datasets.Dataset.from_parquet(str(exported / name / "*.parquet"), cache_dir=str(tmp_path))
                back = back.cast(schema)
            else:  # from_parquet refuses a folder without rows ("corresponds to no data")
                assert pq.read_table(exported / name).column_names == original.column_names
                back = datasets.Dataset.from_dict({column: [] for column in schema}, features=schema)
            assert back.features == original.features, name
            assert back.data.table.equals(original.data.table), name  # every value, bit for bit
        assert "val" in names and "release_stats" in names
    finally:
        datasets.enable_progress_bars()


def test_polars_and_duckdb_read_it(built, exported):
    pl = pytest.importorskip("polars")
    original = datasets.load_from_disk(str(built))["train"].with_format("numpy")
    frame = pl.read_parquet(str(exported / "train" / "*.parquet"))
    assert frame.schema["motion"] == pl.List(pl.Array(pl.Float32, 263))
    assert frame["id"].to_list() == original["id"]
    assert (frame["motion"][0].to_numpy() == original[0]["motion"]).all()
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"SELECT id, len(motion), motion[1][3] FROM read_parquet('{exported}/train/*.parquet')").fetchall()
    assert [r[0] for r in rows] == original["id"]
    assert [r[1] for r in rows] == [len(m) for m in original["motion"]]
    assert rows[0][2] == pytest.approx(float(original[0]["motion"][0, 2]))


def test_export_parquet_command(built, tmp_path, capsys):
    assert main(["export-parquet", str(built), "--out", str(tmp_path / "p")]) == 0
    assert "wrote 4 datasets" in capsys.readouterr().out
    assert main(["export-parquet", str(built), "--out", str(tmp_path / "p")]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main(["export-parquet", str(built), "--out", str(tmp_path / "p"), "--overwrite"]) == 0
    assert main(["export-parquet", str(tmp_path / "p"), "--out", str(tmp_path / "q")]) == 1
    assert "not a built dataset" in capsys.readouterr().err
