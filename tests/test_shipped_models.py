"""The pretrained models this repository ships (pretrained/): each listed in REGISTRY.json, sound (its files match
its manifest), trained as its entry says, within the size budget, and each one a chapter names stands for that
chapter's call, so a reader on a CPU loads it instead of training.

Reading the shipped folders needs no training and no data: these checks run in seconds.
"""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from saae_lib import pretrained
from saae_lib.training import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "pretrained"
REGISTRY = json.loads((SHIPPED / pretrained.REGISTRY_NAME).read_text())
ENTRIES = {entry["name"]: entry for entry in REGISTRY["models"]}
BUDGET_BYTES = 80 * 10**6  # the pretrained-models issue: under 80 MB in all, in the repository
NOT_OPTIONS = ("data", "progress", "pretrained", "train", "recipe")  # train_or_load's own arguments, and the recipe,
# which a shipped model never has to match (it stands for the run under the full recipe, whatever the run asks)


def chapter_calls() -> list[tuple[str, str, dict]]:
    """(chapter, pretrained name, options) of every `train_or_load(..., pretrained="NAME", ...)` in the chapters,
    read from their code cells (literal keyword values only, as the chapters write them)."""
    calls = []
    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            code = "".join(line for line in cell["source"] if not line.lstrip().startswith(("%", "!")))  # magics
            for node in ast.walk(ast.parse(code)):
                if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "train_or_load"):
                    continue
                keywords = {k.arg: k.value for k in node.keywords}
                if "pretrained" not in keywords:
                    continue
                options = {name: ast.literal_eval(value) for name, value in keywords.items()
                           if name not in NOT_OPTIONS}
                calls.append((path.stem, ast.literal_eval(keywords["pretrained"]), options))
    return calls


def test_the_registry_lists_models_and_every_shipped_folder_is_listed():
    assert ENTRIES, "pretrained/REGISTRY.json lists no models"
    folders = {path.name for path in SHIPPED.iterdir() if path.is_dir()}
    assert folders == set(ENTRIES), (f"pretrained/ holds {sorted(folders - set(ENTRIES))} unlisted and lacks "
                                     f"{sorted(set(ENTRIES) - folders)}: run make pretrained")


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_each_shipped_model_is_sound_and_trained_as_its_entry_says(name):
    entry = ENTRIES[name]
    manifest = pretrained.verify(SHIPPED / name)  # every file's size and SHA-256 against the manifest
    wanted = TrainConfig(model=entry["model"], seed=entry["seed"], **entry["options"]).resolved(smoke=False)
    assert manifest["name"] == name and manifest["model"] == entry["model"] and manifest["seed"] == entry["seed"]
    assert not manifest["smoke"], f"pretrained/{name} is a smoke-mode model"
    assert pretrained.recipe_differences(manifest["recipe"], wanted) == []
    assert len(manifest["history"]) == wanted.epochs  # trained to the end of its recipe
    assert manifest["test"] and manifest["validation"]
    assert not manifest["git_dirty"], f"pretrained/{name} was trained from uncommitted code"


def test_the_shipped_models_fit_the_budget():
    size = sum(entry["bytes"] for name in ENTRIES
               for entry in pretrained.read_manifest(SHIPPED / name)["files"].values())
    assert size < BUDGET_BYTES, f"the pretrained models take {size / 1e6:.1f} MB, over {BUDGET_BYTES / 1e6:.0f} MB"


def test_every_pretrained_model_a_chapter_names_stands_for_its_call():
    calls = chapter_calls()
    assert calls, "no chapter passes pretrained= to train_or_load"
    for chapter, name, options in calls:
        assert name in ENTRIES, f"{chapter} asks for the pretrained model {name!r}, which the registry does not list"
        manifest = pretrained.read_manifest(SHIPPED / name)
        wanted = pretrained.shipped_config(options, smoke=False)  # what train_or_load(pretrained=) asks of it
        assert pretrained.recipe_differences(manifest["recipe"], wanted) == [], (
            f"{chapter}: pretrained/{name} was trained with other options than its train_or_load call asks")


@pytest.mark.parametrize("name", [name for name in ("ae", "aae-gaussian") if name in ENTRIES])
def test_evaluate_on_a_shipped_folder_prints_its_manifests_test_numbers(name, isolated, full, capsys):
    """As a new user would: `python -m saae_lib evaluate pretrained/NAME` on a fresh clone measures what the
    manifest says (the models whose measures need no judge classifier, so nothing is trained here)."""
    from tests.test_cli import run_main

    assert run_main(["evaluate", SHIPPED / name, "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    measured = json.loads(printed.out.strip().splitlines()[-1])
    recorded = pretrained.read_manifest(SHIPPED / name)["test"]
    # equal up to float rounding: a matrix product's sums split differently with another number of CPU threads
    assert measured.keys() == recorded.keys()
    for key, value in recorded.items():
        assert measured[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
    assert "pretrained model" in printed.err and "Traceback" not in printed.err


@pytest.mark.parametrize("name", [name for name in ("semi-100", "semi-1000") if name in ENTRIES])
def test_predict_on_a_shipped_classifier_makes_its_manifests_test_error(name, isolated, full, tmp_path, capsys):
    """As the pretrained-models issue asks of a fresh clone: `python -m saae_lib predict pretrained/semi-100 --out
    p.npy` predicts the test digits with the manifest's error (the folder leaves out the discriminators, which
    predicting never calls)."""
    from saae_lib import data as sdata
    from tests.test_cli import run_main

    out = tmp_path / "p.npy"
    assert run_main(["predict", SHIPPED / name, "--out", out, "--device", "cpu"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    predicted = np.load(out)
    labels = sdata.load_mnist(device="cpu").test_labels.numpy()
    error = float((predicted != labels).mean())
    recorded = pretrained.read_manifest(SHIPPED / name)["test"]["test_error"]
    assert error == pytest.approx(recorded, abs=0.5 / len(labels))  # one image at most: float rounding across threads
