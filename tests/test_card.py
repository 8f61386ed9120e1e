"""Every recipe's build meets the ecosystem: `load_dataset` and `load_from_disk` give the same
splits, the card is valid Hugging Face card metadata with citations and no local paths, and the
sample release has motions in every split."""

import json

import datasets
import huggingface_hub
import pytest

from chat_server import ChatServer, caption_of, fine_answer
from datasets_build import build
from datasets_build.recipes import RECIPES
from datasets_build.recipes.finehumanml3d import FineHumanML3DOptions
from datasets_build.recipes.mate import MateOptions
from datasets_build.recipes.options import LLMOptions, SegmentationOptions, TextFeatureOptions
from datasets_build.recipes.remodiffuse import ReMoDiffuseOptions
from datasets_build.synthetic.sample_release import write_sample_release
from test_decompose import split_caption


def _answer(body):
    text = " ".join(m["content"] for m in body["messages"])
    caption = caption_of(body["messages"])
    return json.dumps(split_caption(caption)) if "sub-text" in text else fine_answer(caption)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipes")
    source = {name: write_sample_release(tmp / f"release-{name}", name, 4, seed=3) for name in ("humanml3d", "kitml")}
    out = {}
    with ChatServer(answer=_answer) as server:
        llm = LLMOptions(llm_base_url=server.base_url, llm_model="test-model")
        options = {
            "finehumanml3d": FineHumanML3DOptions(llm=llm),
            "mate": MateOptions(llm=llm, segmentation=SegmentationOptions(skip_segmentation=True)),
            "mate-kitml": MateOptions(llm=llm, segmentation=SegmentationOptions(skip_segmentation=True)),
            "remodiffuse": ReMoDiffuseOptions(text=TextFeatureOptions(text_encoder="minilm")),
        }
        for name, recipe in RECIPES.items():
            out[name] = tmp / name
            config = recipe.config(source[recipe.dataset], out[name], options.get(name), progress=False)
            build(config)
    return out, source


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_both_loaders_give_the_same_splits(builds, recipe):
    out = builds[0][recipe]
    from_disk = datasets.load_from_disk(str(out))
    loaded = datasets.load_dataset(str(out))
    assert set(loaded) == set(from_disk) == {"train", "val", "test"}  # split names kept (val, not validation)
    for split in from_disk:
        assert loaded[split]["id"] == from_disk[split]["id"]
        assert loaded[split].features == from_disk[split].features


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_the_card_is_valid_metadata_with_citations_and_no_local_paths(builds, recipe):
    out, source = builds
    text = (out[recipe] / "README.md").read_text()
    data = huggingface_hub.DatasetCard(text).data.to_dict()
    assert huggingface_hub.DatasetCardData(**data).to_dict() == data  # round trip
    assert data["license"] == "other" and data["license_name"] and data["license_link"].startswith("https://")
    assert "license_details" not in data and data["language"] == ["en"]
    assert data["size_categories"] == ["n<1K"] and data["source_datasets"] and data["task_categories"]
    assert [f["split"] for f in data["configs"][0]["data_files"]] == ["train", "val", "test"]
    assert str(out[recipe]) not in text and str(source[RECIPES[recipe].dataset]) not in text
    expected = {"finehumanml3d": "Fine-grained Textual", "mate": "Motion-Aligned Word", "mate-kitml": "Motion-Aligned",
                "remodiffuse": "Retrieval-Augmented Motion Diffusion", "kitml": "KIT"}
    assert expected.get(recipe, "Generating Diverse and Natural 3D Human Motions") in text


def test_an_empty_split_is_left_out_of_load_dataset_and_said_so(tmp_path):
    source = write_sample_release(tmp_path / "release", "humanml3d", 2, seed=0)  # 2 motions: train only
    out = tmp_path / "out"
    build(RECIPES["humanml3d"].config(source, out, progress=False))
    assert set(datasets.load_dataset(str(out))) == {"train"}
    assert set(datasets.load_from_disk(str(out))) == {"train", "val", "test"}
    assert "hold no motion" in (out / "README.md").read_text()


@pytest.mark.parametrize("motions", [3, 12, 64])
def test_the_sample_release_has_motions_in_every_split(tmp_path, motions):
    root = write_sample_release(tmp_path / "release", "humanml3d", motions, seed=0)
    for split in ("train", "val", "test"):
        assert (root / f"{split}.txt").read_text().split(), split
