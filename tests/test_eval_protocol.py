"""The evaluation protocol (models.eval.protocol), a tiny evaluator trained on the sample build
(`python -m models train evaluator`), and the `python -m models evaluate|generate` command lines.

The sample release (64 motions + mirrors; 44 test samples) is built once for the module and a tiny
evaluator is trained on it once (about 10 s)."""

import json
import pickle

import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.synthetic.sample_release import write_sample_release
from models.__main__ import main
from models.eval import metrics as M
from models.eval.evaluator import load_evaluator
from models.eval.protocol import (
    EvaluationSet, GroundTruth, ProtocolError, ProtocolOptions, evaluate_generation, format_generation_table,
    retrieval_protocol,
)
from models.eval.train import PRESETS, TrainConfig, train
from models.registry import ModelEntry


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("protocol")
    run_build(write_sample_release(tmp / "rel", "humanml3d", 64, seed=0), tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def evaluator_run(built, tmp_path_factory):
    run = tmp_path_factory.mktemp("evaluator") / "tiny"
    train(TrainConfig(data=str(built), out=str(run), progress=False, preset="tiny", model=PRESETS["tiny"].model,
                      **PRESETS["tiny"].train))
    return run


@pytest.fixture(scope="module")
def test_set(built, evaluator_run):
    return EvaluationSet(built, load_evaluator(evaluator_run))


class Shuffled:
    """Real test motions, but of random samples: the mismatched pairs."""

    def __init__(self, test):
        self.motions = [np.asarray(test.samples.raw_motion(i), np.float32) for i in range(len(test))]
        self.calls = []

    def generate(self, captions, lengths, seed):
        self.calls.append((list(captions), list(lengths), seed))
        rng = np.random.default_rng(seed)
        out = []
        for length in lengths:
            pool = [m for m in self.motions if len(m) >= length]
            motion = pool[rng.integers(len(pool))]
            start = rng.integers(len(motion) - length + 1)
            out.append(motion[start:start + length])
        return out


# ----------------------------------------------------------------------------- metrics
def test_identical_embeddings_give_perfect_scores():
    x = np.random.default_rng(0).normal(size=(64, 16))
    top, mm_dist = M.r_precision(x, x, 32)
    assert top.tolist() == [1.0, 1.0, 1.0] and mm_dist == 0.0
    assert abs(M.fid(x, x)) < 1e-6
    assert M.diversity_times(301) == 300 and M.diversity_times(300) == 100 and M.diversity_times(64) == 63


def test_retrieval_protocol_in_batches_of_32_with_intervals():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8))
    same = retrieval_protocol(x, x, replications=20)
    assert set(same) == {"all", "batches of 32"}
    for direction in ("t2m", "m2t"):
        assert same["batches of 32"][f"{direction}/R@1"] == 100.0 and same["all"][f"{direction}/R@10"] == 100.0
        assert same["batches of 32"][f"{direction}/R@1/ci95"] == 0.0
    t, m = rng.normal(size=(320, 8)), rng.normal(size=(320, 8))
    chance = retrieval_protocol(t, m, replications=20)["batches of 32"]
    assert 1.0 < chance["t2m/R@1"] < 6.0 and 1.0 < chance["m2t/R@1"] < 6.0  # ~100/32
    runs = [M.retrieval_in_batches(t, m, 32, np.random.default_rng(np.random.SeedSequence([0, r])))
            for r in range(20)]
    values = np.array([run["t2m/R@5"] for run in runs])
    assert chance["t2m/R@5"] == pytest.approx(values.mean())
    assert chance["t2m/R@5/ci95"] == pytest.approx(1.96 * values.std() / np.sqrt(20))
    euclid = retrieval_protocol(x, x, replications=2, similarity="euclidean")
    assert euclid["batches of 32"]["t2m/R@1"] == 100.0


# ----------------------------------------------------------------------------- the protocol
def test_a_tiny_evaluator_separates_matched_from_shuffled_pairs(test_set):
    options = ProtocolOptions(replications=5, mm_captions=4)
    report = evaluate_generation({"Real motions": GroundTruth(), "shuffled": Shuffled(test_set)}, test_set, options)
    real, shuffled = report.results["Real motions"], report.results["shuffled"]
    assert real["R@1"][0] > 4 / 32, real  # chance is 1/32
    assert real["R@3"][0] > 2 * shuffled["R@3"][0] and shuffled["R@1"][0] < 3 / 32
    assert real["MM-Dist"][0] < shuffled["MM-Dist"][0]
    assert 0 < real["FID"][0] and "MultiModality" not in real and "MultiModality" in shuffled


def test_what_a_generator_gets_and_what_is_computed_once(test_set, monkeypatch):
    evaluator = test_set.evaluator
    counts = {"texts": 0, "motions": 0}
    embed_texts, embed_motions = evaluator.embed_texts, evaluator.embed_motions

    def count(kind, fn):
        def wrapped(*args, **kwargs):
            counts[kind] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(evaluator, "embed_texts", count("texts", embed_texts))
    monkeypatch.setattr(evaluator, "embed_motions", count("motions", embed_motions))
    generator = Shuffled(test_set)
    options = ProtocolOptions(replications=3, mm_captions=5, mm_generations=12, mm_pairs=4)
    report = evaluate_generation({"Real motions": GroundTruth(), "g": generator}, test_set, options)
    # texts: never again after the set was embedded; motions: the real crops per replication, the generated
    # motions and the multimodality generations
    assert counts == {"texts": 0, "motions": 3 * 3}
    main_calls = [c for c in generator.calls if len(c[0]) != 12]
    mm_calls = [c for c in generator.calls if len(c[0]) == 12]
    assert len(mm_calls) == 3 * 5 and all(len(set(caps)) == 1 and len(set(lens)) == 1 for caps, lens, _ in mm_calls)
    assert sum(len(c[0]) for c in main_calls) == 3 * 32 and all(len(c[0]) <= 32 for c in main_calls)
    draw = test_set.draw(0, options)
    first = [c for c in main_calls[:1]][0]
    assert first[1] == [int(x) for x in draw.length[draw.order[:32]]]  # the ground-truth (crop) lengths
    assert first[0] == test_set.chosen_captions(draw.order[:32], draw)
    assert all(n % 4 == 0 and 40 - 4 <= n <= 196 for _, lens, _ in main_calls for n in lens)
    assert report.info["evaluated_per_replication"] == 32 and report.info["samples"] == len(test_set) == 44
    # every metric: mean and 1.96 std / sqrt(replications) of the replications' values
    values = np.array([run["FID"] for run in report.runs["g"]])
    assert report.results["g"]["FID"] == pytest.approx((values.mean(), 1.96 * values.std() / np.sqrt(3)))
    again = evaluate_generation({"g": Shuffled(test_set)}, test_set, options)
    assert again.results["g"] == report.results["g"]  # the same draws and seeds


def test_a_generator_must_return_raw_motions_of_the_asked_length(test_set):
    class Wrong:
        def generate(self, captions, lengths, seed):
            return [np.zeros((n + 4, 263), np.float32) for n in lengths]

    with pytest.raises(ProtocolError, match=r"wrong returned a motion of shape \(\d+, 263\) where \(\d+, 263\)"):
        evaluate_generation({"wrong": Wrong()}, test_set, ProtocolOptions(replications=1))


def test_the_table_has_the_papers_layout(test_set):
    report = evaluate_generation({"Real motions": GroundTruth()}, test_set, ProtocolOptions(replications=2))
    table = format_generation_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["Methods", "R"] and "FID↓" in lines[0] and "MultiModality↑" in lines[0]
    assert lines[1].split() == ["Top", "1", "Top", "2", "Top", "3"]
    row = lines[3].split()
    assert row[:2] == ["Real", "motions"] and all("±" in cell for cell in row[2:8]) and row[8] == "-"
    assert "RANDOM" in table and "2 replications" in table  # random word vectors are flagged


# ----------------------------------------------------------------------------- command lines
def test_evaluate_ground_truth_command(built, evaluator_run, tmp_path, capsys):
    out = tmp_path / "gt.json"
    assert main(["evaluate", "--run", "ground-truth", "--data", str(built), "--evaluator", str(evaluator_run),
                 "--replications", "3", "--json", str(out), "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Real motions" in printed and "R Precision" in printed and "3 replications in" in printed
    saved = json.loads(out.read_text())
    assert set(saved["results"]["Real motions"]["R@1"]) == {"mean", "ci95"}
    assert len(saved["replications"]["Real motions"]) == 3
    assert saved["info"]["evaluator"]["word_vectors"]["source"] == "random"


def test_evaluate_command_errors(built, evaluator_run, tmp_path, capsys):
    assert main(["evaluate", "--run", "ground-truth", "--data", str(built), "--evaluator", str(tmp_path / "none"),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: evaluator folder") and err.count("\n") == 1
    retrieval_run = tmp_path / "tmr"
    retrieval_run.mkdir()
    (retrieval_run / "config.json").write_text(json.dumps({"format": "models.retrieval/1"}))
    assert main(["evaluate", "--run", str(retrieval_run), "--data", str(built), "--evaluator",
                 str(evaluator_run)]) == 1
    assert "is a retrieval run, and retrieval generates no motions" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path / "missing"), "--data", str(built), "--evaluator",
                 str(evaluator_run)]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: --run and --evaluator are required
        main(["evaluate", "--data", str(built)])
    assert exited.value.code == 2 and "required: --run, --evaluator" in capsys.readouterr().err


def test_train_evaluator_command_with_glove_files(built, tmp_path, capsys):
    glove = tmp_path / "glove"
    glove.mkdir()
    words = ["sos", "eos", "unk", "a", "person", "walk", "walks", "forward", "left", "jump"]
    np.save(glove / "our_vab_data.npy", np.random.default_rng(0).normal(size=(len(words), 300)).astype(np.float32))
    pickle.dump(words, open(glove / "our_vab_words.pkl", "wb"))
    pickle.dump({w: i for i, w in enumerate(words)}, open(glove / "our_vab_idx.pkl", "wb"))
    run = tmp_path / "run"
    args = ["train", "evaluator", "--data", str(built), "--out", str(run), "--preset", "tiny", "--max-steps", "2",
            "--device", "cpu", "--quiet", "--glove", str(glove), "--set", "dim_coemb_hidden=8"]
    assert main(args) == 0
    assert f"trained an evaluator into {run}" in capsys.readouterr().out
    for path in ("text_mot_match/model/finest.tar", "text_mot_match/model/latest.tar", "meta/mean.npy",
                 "meta/std.npy", "glove/our_vab_idx.pkl", "Decomp_SP001_SM001_H512/model/latest.tar",
                 "checkpoint.pt", "config.json", "evaluator.json", "log.jsonl"):
        assert (run / path).is_file(), path
    finest = torch.load(run / "text_mot_match/model/finest.tar", weights_only=True)
    assert {"text_encoder", "motion_encoder", "movement_encoder", "opt_text_encoder", "opt_motion_encoder", "epoch",
            "iter"} <= finest.keys()
    config = json.loads((run / "config.json").read_text())
    assert config["format"] == "models.evaluator/1" and config["word_vectors"]["source"].startswith("GloVe")
    assert config["model_config"]["dim_coemb_hidden"] == 8 and config["train_config"]["preset"] == "tiny"
    assert config["train_config"]["max_steps"] == 2
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log if r["kind"] == "epoch"] == ["autoencoder", "matching"]  # 2 steps per stage
    assert log[-1]["kind"] == "run" and log[-1]["steps"] == 4
    evaluator = load_evaluator(run)
    assert evaluator.dim == 8 and len(evaluator.vectorizer) == len(words) and "GloVe" in evaluator.describe()
    assert main(args) == 1 and "already holds a checkpoint" in capsys.readouterr().err
    assert main([*args, "--resume", "--max-steps", "1"]) == 0  # resumes after the stages' finished epochs
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["progress"]["matching_epochs"] == 2 and state["step"] == 5


def load_toy(run_dir, device=None):
    """The registry's loader of the toy generator below (test_generate_command)."""
    return Toy()


class Toy:
    def generate(self, captions, lengths, seed):
        rng = np.random.default_rng(seed)
        return [rng.normal(scale=0.01, size=(n, 263)).astype(np.float32) for n in lengths]


def test_generate_command(tmp_path, monkeypatch, capsys):
    run = tmp_path / "toy-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "models.toy/1"}))
    toy = ModelEntry("toy", "a toy generator", {}, checkpoint="toy", generator="test_eval_protocol:load_toy")
    monkeypatch.setattr("models.__main__.registry", lambda: {"toy": toy})
    out = tmp_path / "walk.npy"
    assert main(["generate", "--run", str(run), "--text", "a person walks", "--length", "24", "--out", str(out),
                 "--seed", "3", "--gif", str(tmp_path / "walk.png"), "--device", "cpu"]) == 0
    motion = np.load(out)
    assert motion.shape == (24, 263) and np.array_equal(motion, Toy().generate(["x"], [24], 3)[0])
    assert (tmp_path / "walk.png").is_file() and "wrote" in capsys.readouterr().out
    monkeypatch.setattr("models.__main__.registry", lambda: {"toy": ModelEntry("toy", "", {}, checkpoint="toy")})
    assert main(["generate", "--run", str(run), "--text", "x", "--out", str(out)]) == 1
    assert "toy generates no motions" in capsys.readouterr().err
