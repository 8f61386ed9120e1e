"""LaMP-M2T and LaMP-BertScore: the CPU tests of MODELS.md section 8 ("LaMP-M2T", "LaMP-BertScore") with a
tiny random LaMP (16 queries, hidden 32) and a tiny random OPT saved to tmp_path with a byte-level BPE
tokenizer trained on the captions (no hub), then training (run folder, exact resume), the `caption`
command and LaMP-BertScore of a generator."""

import json

import numpy as np
import pytest
import torch

from conftest import run_build
from datasets_build.synthetic.sample_release import write_sample_release
from models.base import load_checkpoint
from models.lamp.api import save_checkpoint as save_lamp
from models.lamp.caption import Captioner, lamp_bertscore, load_captioner, main as caption_main
from models.lamp.m2t import IGNORE, LaMPM2T, M2TConfig
from models.lamp.m2t_train import FORMAT, PRESETS, TrainConfig, load_lm, train, write_tiny_lm
from models.lamp.pretrain import LaMP, LaMPConfig
from models.training.data import compute_stats
from models.vq.model import VQVAE, VQVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

D = 263
CAPTIONS = ["a man is walking forward", "a person jumps up high", "a man is turning left slowly",
            "someone waves the right hand", "a person sits down", "a man is running in a circle",
            "a woman kicks with the left leg", "a person bows"]


def tiny_lamp(queries: int = 16, frames: int = 64, stats=None) -> LaMP:
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(motion_dim=D, width=32, code_dim=32, nb_code=16, depth=1))
    if stats is not None:
        vq.stats = stats
    return LaMP(LaMPConfig(vocab_size=40, bos_token_id=39, hidden_size=32, num_layers=2, num_heads=2,
                           intermediate_size=64, encoder_width=48, motion_width=32, codebook_size=16, embed_dim=32,
                           num_query_tokens=queries, max_motion_length=frames), vq)


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    return write_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny-opt", CAPTIONS * 4)


def tiny_model(lm_folder, **overrides) -> LaMPM2T:
    lm, tokenizer = load_lm(lm_folder, torch.float32)
    return LaMPM2T(M2TConfig(**{"lora_r": 4, "lora_alpha": 8, **overrides}), tiny_lamp(), lm, tokenizer)


def motions(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 64, D, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- MODELS.md 8, LaMP-M2T
def test_only_lora_and_the_projection_train(lm_folder):
    model = tiny_model(lm_folder)
    names = model.trainable_names()
    assert {"opt_proj.weight", "opt_proj.bias"} <= set(names)
    lora = [n for n in names if "lora_" in n]
    assert lora and set(names) == set(lora) | {"opt_proj.weight", "opt_proj.bias"}
    assert {n.split(".")[-4] for n in lora} == {"q_proj", "v_proj"}  # peft's default for OPT
    assert not any(p.requires_grad for p in model.lamp.parameters())
    with_qformer = tiny_model(lm_folder, train_qformer=True).trainable_names()
    assert any(n.startswith("lamp.qformer.bert.") for n in with_qformer) and "lamp.query_tokens" in with_qformer
    assert not any(n.startswith("lamp.vq.") for n in with_qformer)


def test_labels_ignore_the_prefix_and_the_pads(lm_folder):
    model = tiny_model(lm_folder)
    prefix = model.prefix(motions(2))
    assert prefix.shape == (2, 16, 32)
    inputs, mask, labels = model.training_inputs(prefix, ["a person bows", "a man is running in a circle"])
    assert inputs.shape[:2] == labels.shape == mask.shape
    assert (labels[:, :16] == IGNORE).all()
    text_mask = mask[:, 16:].bool()
    assert (labels[:, 16:][~text_mask] == IGNORE).all() and (labels[:, 16:][text_mask] != IGNORE).all()
    assert (~text_mask[0]).any()  # the shorter caption is right-padded
    newline = model.eos_token_id
    last = text_mask.sum(1) - 1
    assert labels[0, 16 + last[0]] == newline and labels[1, 16 + last[1]] == newline


def test_loss_falls_on_8_pairs(lm_folder):
    model = tiny_model(lm_folder)
    x = motions(8)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(40):
        model.train()
        loss = model(x, CAPTIONS)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_generate_returns_one_string_per_motion_after_the_prompt(lm_folder):
    model = tiny_model(lm_folder, max_new_tokens=8).eval()
    out = model.generate(motions(3))
    assert len(out) == 3 and all(isinstance(t, str) and t.startswith("a man is") for t in out)
    bare = tiny_model(lm_folder, max_new_tokens=8, caption_with_prompt=False).eval().generate(motions(3))
    assert out == [f"a man is {t}".strip() for t in bare]  # the same beams, the prompt left off


# ----------------------------------------------------------------------------- training, captioning, BertScore
@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("m2t")
    run_build(write_sample_release(tmp / "rel", "humanml3d", 24, seed=0), tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def lamp_run(built, tmp_path_factory):
    run = tmp_path_factory.mktemp("lamp") / "lamp"
    stats = compute_stats(built, "train")
    save_lamp(run, model=tiny_lamp(49, 196, stats), optimizer=None, stats=stats, epoch=1, step=1, train_config={},
              data_options={}, vq_fingerprint=None)
    return run


def _cfg(built, lamp_run, lm_folder, out, **kw):
    return TrainConfig(data=str(built), out=str(out), lamp=str(lamp_run), lm=str(lm_folder), batch_size=8,
                       num_workers=0, progress=False, log_every=1, lr=1e-3,
                       model={**PRESETS["tiny"].model, "max_new_tokens": 6}, **kw)


@pytest.fixture(scope="module")
def trained(built, lamp_run, lm_folder, tmp_path_factory):
    return train(_cfg(built, lamp_run, lm_folder, tmp_path_factory.mktemp("runs") / "m2t", epochs=2))


def test_run_folder_and_exact_resume(built, lamp_run, lm_folder, trained, tmp_path):
    state = load_checkpoint(trained, FORMAT)
    assert state["epoch"] == 2 and all("lora_" in k or k.startswith("opt_proj.") for k in state["model"])
    assert any(k.startswith("qformer.bert.") for k in state["lamp"]["model"])
    lines = [json.loads(x) for x in (trained / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if x["kind"] == "epoch"] == [1, 2]
    run = tmp_path / "resumed"
    train(_cfg(built, lamp_run, lm_folder, run, epochs=1))
    train(_cfg(built, lamp_run, lm_folder, run, epochs=2, resume=True))
    a, b = state["model"], load_checkpoint(run, FORMAT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_caption_command_writes_captions_and_metrics(built, trained, tmp_path, capsys):
    out = tmp_path / "captions.jsonl"
    assert caption_main(["--run", str(trained), "--data", str(built), "--split", "test", "--out", str(out),
                         "--limit", "4", "--device", "cpu"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["caption"].startswith("a man is") and r["references"] for r in rows)
    metrics = json.loads((tmp_path / "captions.metrics.json").read_text())
    assert {"bleu_1", "bleu_4", "rouge_l", "cider"} <= set(metrics) and metrics["samples"] == 4
    assert "bleu_1" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from datasets_build.text.torch_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("bert") / "tiny-bert"
    folder.mkdir()
    words = sorted({w for c in CAPTIONS for w in c.split()} | {"green", "tables", "sing"})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    BertTokenizer(str(folder / "vocab.txt"), model_max_length=512).save_pretrained(folder)
    return folder


class EchoGenerator:
    """A generator stand-in: random raw motions of the asked lengths."""

    def generate(self, captions, lengths, seed):
        rng = np.random.default_rng(seed)
        return [rng.normal(size=(n, D)).astype(np.float32) for n in lengths]


def test_bertscore_of_identical_captions_is_one_and_lamp_bertscore_runs(trained, tiny_bert):
    from models.eval.captioning import bertscore_f1, bertscore_setup

    setup = bertscore_setup(tiny_bert, num_layers=2, idf=False, rescale=False)
    same = bertscore_f1(CAPTIONS[:3], CAPTIONS[:3], setup)
    assert np.allclose(same, 1.0, atol=1e-5)
    assert bertscore_f1(["green tables sing"], ["a person bows"], setup)[0] < 1.0
    captioner = load_captioner(trained, "cpu", batch_size=2)
    assert isinstance(captioner, Captioner)
    result = lamp_bertscore(EchoGenerator(), CAPTIONS[:3], [40, 64, 80], captioner, setup, seed=0)
    assert len(result["captions"]) == 3 and 0.0 < result["lamp_bertscore"] <= 100.0 + 1e-6
    assert result["lamp_bertscore"] == pytest.approx(np.mean(result["per_caption"]))


def test_motion_captions_processor_captions_every_motion_of_a_build(built, trained, tmp_path):
    import datasets

    from datasets_build.recipes import RECIPES
    from datasets_build.recipes.options import MotionCaptionOptions
    from datasets_build.recipes.recipe import RecipeError
    from datasets_build.recipes.release import ReleaseOptions
    from processors.motion_captions import MotionCaptions

    options = ReleaseOptions(captions=MotionCaptionOptions(captioner=str(trained), captioner_device="cpu"))
    (step,), _ = RECIPES["humanml3d"].steps(options)  # `--captioner RUN` on the release recipe
    assert isinstance(step, MotionCaptions) and step.device == "cpu"
    assert step.captioner_hash and step.fingerprint() != MotionCaptions(captioner=str(tmp_path)).fingerprint()
    with pytest.raises(RecipeError, match="no checkpoint.pt"):
        RECIPES["humanml3d"].steps(ReleaseOptions(captions=MotionCaptionOptions(captioner=str(tmp_path))))
    out = tmp_path / "captioned"
    run_build(built.parent / "rel", out, processors=(step,))
    split = datasets.load_from_disk(str(out))["test"]
    captions = split["generated_caption"]
    assert len(captions) == len(split) and all(c.startswith("a man is") for c in captions)
    motion = np.asarray(split[0]["motion"], np.float32)
    assert load_captioner(trained, "cpu").caption([motion]) == [captions[0]]
