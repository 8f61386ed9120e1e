"""What a dataset card cites: the datasets a build derives from and the papers whose methods its
steps implement (a step names them in `Step.cites`)."""

from __future__ import annotations

CITATIONS = {
    "humanml3d": """@inproceedings{guo2022humanml3d,
  title     = {Generating Diverse and Natural 3D Human Motions From Text},
  author    = {Guo, Chuan and Zou, Shihao and Zuo, Xinxin and Wang, Sen and Ji, Wei and Li, Xingyu and Cheng, Li},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}""",
    "kitml": """@article{plappert2016kit,
  title   = {The {KIT} Motion-Language Dataset},
  author  = {Plappert, Matthias and Mandery, Christian and Asfour, Tamim},
  journal = {Big Data},
  volume  = {4},
  number  = {4},
  year    = {2016}
}""",
    "amass": """@inproceedings{mahmood2019amass,
  title     = {{AMASS}: Archive of Motion Capture as Surface Shapes},
  author    = {Mahmood, Naureen and Ghorbani, Nima and Troje, Nikolaus F. and Pons-Moll, Gerard and Black, Michael J.},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2019}
}""",
    "finehumanml3d": """@article{li2024finemotiondiffuse,
  title   = {Motion Generation from Fine-grained Textual Descriptions},
  author  = {Li, Kunhang and Feng, Yansong},
  journal = {arXiv preprint arXiv:2403.13518},
  year    = {2024}
}""",
    "mate": """@misc{han-mate,
  title  = {Motion-Aligned Word Embeddings for Text-to-Motion Generation},
  author = {Han, Ke and Lyu, Yueming and Sebe, Nicu}
}""",
    "remodiffuse": """@inproceedings{zhang2023remodiffuse,
  title     = {{ReMoDiffuse}: Retrieval-Augmented Motion Diffusion Model},
  author    = {Zhang, Mingyuan and Guo, Xinying and Pan, Liang and Cai, Zhongang and Hong, Fangzhou and Li, Huirong and Yang, Lei and Liu, Ziwei},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2023}
}""",
}

# The releases' own sources, cited by every build of them.
DATASET_CITATIONS = {"humanml3d": ("humanml3d", "amass"), "kitml": ("kitml",)}
SOURCE_DATASETS = {"humanml3d": ["HumanML3D", "AMASS", "HumanAct12"], "kitml": ["KIT-ML"]}


def citations_for(dataset: str, method_keys: list[str]) -> list[str]:
    """BibTeX entries, datasets first, then methods, each once."""
    keys = list(DATASET_CITATIONS.get(dataset, ())) + method_keys
    return [CITATIONS[key] for key in dict.fromkeys(keys) if key in CITATIONS]
