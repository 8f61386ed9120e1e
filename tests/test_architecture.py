"""The layers of ../shared/docs/ARCHITECTURE.md hold: no module imports upward or in a cycle
(import-linter contracts in pyproject.toml), and every model package is under those contracts."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_MODEL_PACKAGES = {"base", "training", "eval", "nn", "diffusion", "vq"}  # used by several models


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_imports_follow_the_layers():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_model_package_is_in_the_contracts():
    packages = sorted(f"models.{p.name}" for p in (REPO / "models").iterdir()
                      if (p / "__init__.py").is_file() and p.name not in SHARED_MODEL_PACKAGES)
    contracts = _contracts()
    layered = {name.strip(" ()") for layer in contracts["layers"]["layers"] for name in layer.replace(":", "|").split("|")}
    for package in packages:
        assert package in layered, f"{package}: add it to the model layer of the 'layers' contract in pyproject.toml"
        assert package in contracts["models"]["modules"], (
            f"{package}: add it to the 'models' independence contract in pyproject.toml")


def test_the_contract_fails_an_upward_import(tmp_path):
    """The check can fail: a copy of the tree where a low layer imports a high one is refused."""
    copy = tmp_path / "repo"
    for name in ("datasets_build", "processors", "models", "prompts"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    specs = copy / "datasets_build" / "motion" / "specs.py"
    specs.write_text(specs.read_text() + "\nimport datasets_build.cli.main  # upward\n")
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "datasets_build.motion is not allowed to import datasets_build.cli" in result.stdout
