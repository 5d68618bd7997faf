"""Pretrained folders (saae_lib.pretrained): export -> verify -> load, the commands on such a folder, its faults (each
one line), fetch from a local HTTP server, and scripts/make_pretrained.py on a registry of one tiny model.

Tiny models (32-32 hidden layers, one epoch) on the smoke data set, in smoke mode; no model here needs the judge
classifier, so nothing trains it.
"""

import copy
import functools
import hashlib
import http.server
import importlib.util
import json
import shlex
import shutil
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import saae_lib
from saae_lib import checkpoints, evaluation, metrics, pretrained, settings, training
from saae_lib import data as sdata
from saae_lib.checkpoints import CHECKPOINT_NAME, read_checkpoint
from saae_lib.pretrained import MANIFEST_NAME, WEIGHTS_NAME, PretrainedError
from tests.test_cli import ROOT, one_line_error, run_main

pytestmark = pytest.mark.usefixtures("isolated", "fast")
TINY = dict(hidden=(32, 32), batch_size=100, precision="fp32", device="cpu", epochs=1)
TRAINING_SECONDS = 12.5  # what the test says training took: the manifest must repeat it


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, session_dirs):
    """An aae and a supervised classifier, trained for one epoch on the smoke data and exported: the trainers,
    their folders, and the data (the smoke data set, as the command line loads it)."""
    base = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as patcher:
        patcher.setenv("SAAE_FAST", "1")
        patcher.setenv("SAAE_DATA_DIR", str(session_dirs.data))
        patcher.setenv("SAAE_CACHE_DIR", str(session_dirs.cache))
        data = sdata.load_mnist(device="cpu", smoke=True)
        trainers = {"aae": training.train("aae", data=data, progress=False, **TINY),
                    "supervised": training.train("supervised", data=data, progress=False, n_labels=100, **TINY)}
        folders = {kind: pretrained.export(trainer, base / kind, training_seconds=TRAINING_SECONDS)
                   for kind, trainer in trainers.items()}
    return SimpleNamespace(trainers=trainers, folders=folders, data=data)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text())


def copy_of(shipped, kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(shipped.folders[kind], tmp_path / kind))


def without_seconds(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


# -- export -> verify -> load ------------------------------------------------------------------------------------
def test_export_writes_half_precision_weights_and_a_strict_manifest(shipped):
    folder, trainer = shipped.folders["aae"], shipped.trainers["aae"]
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME, WEIGHTS_NAME]
    manifest = json.loads((folder / MANIFEST_NAME).read_text(), parse_constant=lambda c: pytest.fail(c))
    weights = torch.load(folder / WEIGHTS_NAME, weights_only=True)
    assert set(weights) == set(trainer.model.state_dict())  # the model only: no optimizer, no random stream
    assert all(t.dtype == torch.float16 for t in weights.values() if t.is_floating_point())
    assert manifest["files"] == {WEIGHTS_NAME: {"sha256": hashlib.sha256((folder / WEIGHTS_NAME).read_bytes())
                                                .hexdigest(), "bytes": (folder / WEIGHTS_NAME).stat().st_size}}
    recipe = manifest["recipe"]
    assert set(recipe) == set(training.CONFIG_FIELDS) - {"device", "cuda_graph"}
    assert training.TrainConfig(**recipe, device="cpu").resolved() == trainer.config
    assert manifest["model"] == "aae" and manifest["seed"] == trainer.config.seed == recipe["seed"]
    assert manifest["name"] == folder.name and manifest["saae_lib_version"] == saae_lib.__version__
    assert manifest["machine"]["torch"] == torch.__version__ and manifest["machine"]["device"] == "cpu"
    assert manifest["training_seconds"] == TRAINING_SECONDS
    assert manifest["history"] == json.loads(json.dumps(trainer.history))
    assert manifest["smoke"] is True and manifest["test"]["smoke"] == settings.SMOKE_NOTE
    assert manifest["data"]["test"] == len(shipped.data.test_images)


@pytest.mark.parametrize("kind", ["aae", "supervised"])
def test_loaded_model_is_the_float16_model_and_measures_the_manifest(shipped, kind):
    folder, trainer = shipped.folders[kind], shipped.trainers[kind]
    loaded = pretrained.load(folder, data=shipped.data, device="cpu")
    rounded = copy.deepcopy(trainer.model)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in trainer.model.state_dict().items()})
    original, mine = trainer.model.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in rounded.state_dict().items())
    assert any(not torch.equal(mine[k], v) for k, v in original.items() if v.is_floating_point())  # it was rounded
    images = shipped.data.test_images
    if kind == "aae":
        assert torch.equal(metrics.reconstruct(loaded.model, images), metrics.reconstruct(rounded, images))
    else:
        assert torch.equal(metrics.predict(loaded.model, images), metrics.predict(rounded, images))
    manifest = manifest_of(folder)
    assert evaluation.test_metrics(loaded) == manifest["test"]
    assert evaluation.validation_metrics(loaded) == manifest["validation"]
    assert loaded.pretrained == manifest and loaded.smoke is True
    assert loaded.history == manifest["history"]
    assert all(not optimizer.state for optimizer in loaded.optimizers.values())  # fresh optimizers


def test_export_refuses_a_folder_with_other_files(shipped, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PretrainedError, match="holds other files") as error:
        pretrained.export(shipped.trainers["aae"], tmp_path, training_seconds=TRAINING_SECONDS)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# -- the command line on a pretrained folder ------------------------------------------------------------------------
def test_predict_on_a_pretrained_classifier_makes_the_manifest_error(shipped, tmp_path, capsys):
    folder = shipped.folders["supervised"]
    out = tmp_path / "predicted.npy"
    assert run_main(["predict", folder, "--out", out, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"is the pretrained model {folder.name!r}" in captured.err and settings.SMOKE_NOTE in captured.out
    predicted = np.load(out)
    error = float((predicted != shipped.data.test_labels.numpy()).mean())
    assert error == pytest.approx(manifest_of(folder)["test"]["test_error"], abs=0.5 / len(predicted))


def test_evaluate_and_encode_on_a_pretrained_autoencoder(shipped, tmp_path, capsys):
    folder = shipped.folders["aae"]
    assert run_main(["evaluate", folder, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and json.loads(printed[0]) == manifest_of(folder)["test"]
    out = tmp_path / "codes.npz"
    assert run_main(["encode", folder, "--out", out, "--device", "cpu"]) == 0
    with np.load(out) as saved:
        loaded = pretrained.load(folder, data=shipped.data, device="cpu")
        assert np.array_equal(saved["codes"], metrics.encode(loaded.model, shipped.data.test_images).numpy())
        assert str(saved["smoke"]) == settings.SMOKE_NOTE


def test_train_refuses_a_pretrained_folder_and_gives_the_recipe(shipped, tmp_path, capsys):
    folder = copy_of(shipped, "aae", tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert run_main(["train", "aae", "--out", folder, "--resume", "--device", "cpu"]) == 2
    refusal = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds a pretrained model" in refusal and "no optimizer state" in refusal
    assert run_main(["train", "aae", "--out", folder, "--force", "--device", "cpu"]) == 2
    assert "never writes into one, even with --force" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # the command it suggests trains the same run again: the same recipe, the same numbers epoch by epoch
    words = shlex.split(refusal.split("train longer): ", 1)[1])
    assert words[:3] == ["python", "-m", "saae_lib"]
    words = words[3:]
    words[words.index("--out") + 1] = str(tmp_path / "again")
    assert run_main([*words, "--device", "cpu"]) == 0
    state, saved = read_checkpoint(tmp_path / "again")
    manifest = manifest_of(folder)
    assert pretrained.recipe_of(training.TrainConfig(**saved)) == manifest["recipe"]
    assert without_seconds(json.loads(json.dumps(state["history"]))) == without_seconds(manifest["history"])


# -- faults: each one line, from the API and from the command line ---------------------------------------------------
def flip_a_byte(folder):
    weights = bytearray((folder / WEIGHTS_NAME).read_bytes())
    weights[len(weights) // 2] ^= 0xFF
    (folder / WEIGHTS_NAME).write_bytes(bytes(weights))


def edit_manifest(change):
    def apply(folder):
        manifest = manifest_of(folder)
        change(manifest)
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return apply


def save_weights(weights: dict, folder: Path) -> None:
    """Write `weights` as the folder's weights.pt and list the new file in its manifest, as if exported so."""
    torch.save(weights, folder / WEIGHTS_NAME)
    edit_manifest(lambda m: m["files"].update({WEIGHTS_NAME: pretrained.file_entry(folder / WEIGHTS_NAME)}))(folder)


def drop_weights(prefix):
    """Remove the weights under `prefix`, as if exported without them."""
    def apply(folder):
        weights = torch.load(folder / WEIGHTS_NAME, weights_only=True)
        save_weights({key: value for key, value in weights.items() if not key.startswith(prefix)}, folder)
    return apply


FAULTS = {
    "tampered weights": (flip_a_byte, f"{WEIGHTS_NAME} does not match its manifest"),
    # an AAE's discriminator is no training-only module: weights without it are not the model
    "discriminator left out": (drop_weights("discriminator."), "(discriminator.0.weight is missing)"),
    "longer weights": (lambda f: (f / WEIGHTS_NAME).write_bytes((f / WEIGHTS_NAME).read_bytes() + b"\0"),
                       f"{WEIGHTS_NAME} has"),
    "missing weights": (lambda f: (f / WEIGHTS_NAME).unlink(), f"{WEIGHTS_NAME} is missing"),
    "NaN in the manifest": (lambda f: (f / MANIFEST_NAME).write_text(
        (f / MANIFEST_NAME).read_text().replace(f'"training_seconds": {TRAINING_SECONDS}', '"training_seconds": NaN')),
        "is not strict JSON"),
    "truncated manifest": (lambda f: (f / MANIFEST_NAME).write_text((f / MANIFEST_NAME).read_text()[:100]),
                           "is not strict JSON"),
    "another hash listed": (edit_manifest(lambda m: m["files"][WEIGHTS_NAME].update(sha256="0" * 64)),
                            f"{WEIGHTS_NAME} does not match its manifest"),
    "newer format": (edit_manifest(lambda m: m.update(format=pretrained.FORMAT + 1)), "newer saae_lib"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_damaged_pretrained_folder_is_one_line(fault, shipped, tmp_path, capsys):
    damage, message = FAULTS[fault]
    folder = copy_of(shipped, "aae", tmp_path)
    damage(folder)
    with pytest.raises(PretrainedError) as error:
        pretrained.load(folder, data=shipped.data, device="cpu")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert run_main(["evaluate", folder, "--device", "cpu"]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert line == f"error: {error.value}"


# -- fetch ------------------------------------------------------------------------------------------------------
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(shipped, tmp_path):
    """A local HTTP server of a copy of the aae folder as {url}/tiny-aae/; `stop()` shuts it down."""
    served = tmp_path / "served"
    shutil.copytree(shipped.folders["aae"], served / "tiny-aae")
    yield from http_server(served, "tiny-aae")


def http_server(served: Path, name: str):
    """Serve the folder `served` on a local port (for a fixture to yield from): url, the files of `name` there, and
    `stop()`."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    running = [True]

    def stop():
        if running[0]:
            httpd.shutdown()
            httpd.server_close()
            thread.join()
            running[0] = False

    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}", files=served / name, stop=stop)
    stop()


def test_fetch_downloads_verifies_and_reuses_the_cache(server, tmp_path):
    cache = tmp_path / "cache" / "tiny-aae"
    assert pretrained.fetch("tiny-aae", base_url=server.url, cache=cache) == cache
    assert pretrained.verify(cache) == manifest_of(server.files)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == {p.name: p.read_bytes()
                                                                  for p in server.files.iterdir()}
    assert [p.name for p in cache.parent.iterdir()] == ["tiny-aae"]  # no download folder left behind
    server.stop()
    assert pretrained.fetch("tiny-aae", base_url=server.url, cache=cache) == cache  # no network needed


def test_fetch_default_cache_and_a_damaged_cache_fetched_again(server):
    cache = pretrained.fetch("tiny-aae", base_url=server.url)
    assert cache == settings.cache_dir() / "pretrained" / saae_lib.__version__ / "tiny-aae"
    flip_a_byte(cache)
    assert pretrained.fetch("tiny-aae", base_url=server.url) == cache
    assert pretrained.verify(cache)["files"] == manifest_of(server.files)["files"]


def test_fetch_without_base_url_downloads_from_the_default_address(server, tmp_path, monkeypatch):
    """No base_url: fetch asks default_base_url(), which is pretrained/ at this version's tag of the book's repository
    (here pointed at the local server: the test has no network)."""
    slug = settings.REPOSITORY.removeprefix("https://github.com/")
    assert pretrained.default_base_url() == (f"https://raw.githubusercontent.com/{slug}/v{saae_lib.__version__}"
                                             "/pretrained")
    monkeypatch.setattr(pretrained, "default_base_url", lambda: server.url)
    cache = tmp_path / "cache" / "tiny-aae"
    assert pretrained.fetch("tiny-aae", cache=cache) == cache
    assert pretrained.verify(cache) == manifest_of(server.files)


def test_fetch_refuses_a_tampered_file_and_keeps_nothing(server, tmp_path):
    flip_a_byte(server.files)
    cache = tmp_path / "cache" / "tiny-aae"
    with pytest.raises(PretrainedError, match="does not match its manifest") as error:
        pretrained.fetch("tiny-aae", base_url=server.url, cache=cache)
    assert "\n" not in str(error.value) and f"{server.url}/tiny-aae/{WEIGHTS_NAME}" in str(error.value)
    assert not pretrained.is_pretrained(cache)
    assert [p.name for p in cache.parent.iterdir()] in ([], ["tiny-aae"])  # no download folder left behind
    assert not any(cache.parent.rglob(WEIGHTS_NAME))


def test_fetch_of_a_missing_model_is_one_line(server, tmp_path):
    with pytest.raises(PretrainedError, match="HTTP 404") as error:
        pretrained.fetch("no-such-model", base_url=server.url, cache=tmp_path / "cache" / "no-such-model")
    assert "\n" not in str(error.value)
    assert not any((tmp_path / "cache").iterdir())


def test_fetch_from_a_server_that_is_down_is_one_line(server, tmp_path):
    server.stop()
    with pytest.raises(PretrainedError, match="cannot reach") as error:
        pretrained.fetch("tiny-aae", base_url=server.url, cache=tmp_path / "cache" / "tiny-aae")
    assert "\n" not in str(error.value) and not pretrained.is_pretrained(tmp_path / "cache" / "tiny-aae")


def test_fetch_from_a_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        timeout = 0.5
        with pytest.raises(PretrainedError, match=f"did not answer within {timeout:g} s") as error:
            pretrained.fetch("tiny-aae", base_url=f"http://127.0.0.1:{silent.getsockname()[1]}",
                             cache=tmp_path / "cache" / "tiny-aae", timeout=timeout)
    assert "\n" not in str(error.value)


# -- make pretrained --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def make_pretrained():
    spec = importlib.util.spec_from_file_location("make_pretrained", ROOT / "scripts" / "make_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_registry(path: Path, models: list) -> Path:
    path.write_text(json.dumps({"comment": "a test registry", "models": models}))
    return path


TINY_ENTRY = {"name": "tiny-aae", "model": "aae", "seed": 0,
              "options": {"epochs": 1, "hidden": [32, 32], "batch_size": 100, "precision": "fp32"}}


def test_an_empty_registry_trains_nothing_and_says_so(make_pretrained, tmp_path, capsys):
    registry = json.loads((ROOT / "pretrained" / "REGISTRY.json").read_text())
    assert "name" in registry["comment"] and "seed" in registry["comment"]  # the shipped one says its format
    empty = write_registry(tmp_path / "REGISTRY.json", [])
    assert make_pretrained.main(["--registry", str(empty), "--out", str(tmp_path / "out"),
                                 "--runs", str(tmp_path / "runs")]) == 0
    assert "lists no models" in capsys.readouterr().out
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_make_pretrained_trains_exports_and_resumes(make_pretrained, tmp_path, capsys):
    registry = write_registry(tmp_path / "REGISTRY.json", [TINY_ENTRY])
    argv = ["--registry", str(registry), "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
            "--device", "cpu"]
    assert make_pretrained.main(argv) == 0
    printed = capsys.readouterr().out
    assert "[tiny-aae] epoch 1/1:" in printed  # the training process's lines, prefixed with its name
    folder = tmp_path / "out" / "tiny-aae"
    manifest = pretrained.verify(folder)
    state, _ = read_checkpoint(tmp_path / "runs" / "tiny-aae")
    assert manifest["name"] == "tiny-aae" and manifest["recipe"]["hidden"] == [32, 32]
    assert manifest["training_seconds"] == sum(record["seconds"] for record in state["history"])
    assert manifest["history"] == json.loads(json.dumps(state["history"]))
    assert make_pretrained.main(argv) == 0  # nothing left to do
    printed = capsys.readouterr().out
    assert "is trained already" in printed and "is up to date" in printed and "epoch 1/1" not in printed
    assert pretrained.verify(folder) == manifest
    # what a changed registry asks for: more epochs continue the run, another option trains it again
    entry = make_pretrained.read_registry(write_registry(tmp_path / "more.json", [
        {**TINY_ENTRY, "options": {**TINY_ENTRY["options"], "epochs": 2}}]), "cpu")[0]
    assert make_pretrained.plan(entry, tmp_path / "runs" / "tiny-aae") == ("resume", None)
    entry = make_pretrained.read_registry(write_registry(tmp_path / "other.json", [
        {**TINY_ENTRY, "options": {**TINY_ENTRY["options"], "lr": 1e-4}}]), "cpu")[0]
    assert make_pretrained.plan(entry, tmp_path / "runs" / "tiny-aae")[0] == "force"
    assert (tmp_path / "runs" / "tiny-aae" / CHECKPOINT_NAME).is_file()


def test_make_pretrained_trains_no_more_models_at_a_time_than_jobs(make_pretrained, tmp_path, capsys):
    """More single-thread runs than cores only slow each other down: --jobs 1 trains one model after the other."""
    registry = write_registry(tmp_path / "REGISTRY.json", [TINY_ENTRY, {**TINY_ENTRY, "name": "tiny-aae-2"}])
    argv = ["--registry", str(registry), "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
            "--device", "cpu", "--jobs", "1"]
    assert make_pretrained.main(argv) == 0
    printed = capsys.readouterr().out
    assert "training 2 models, 1 at a time (--jobs)" in printed
    assert printed.index("[tiny-aae] epoch 1/1:") < printed.index("[tiny-aae-2] python -m saae_lib train")
    assert "one model at a time" in pretrained.verify(tmp_path / "out" / "tiny-aae-2")["training_note"]
    with pytest.raises(SystemExit) as exit_:
        make_pretrained.main([*argv[:-1], "0"])
    assert exit_.value.code == 2 and "--jobs: invalid positive value: '0'" in capsys.readouterr().err


@pytest.mark.parametrize("entry, message", [
    ({**TINY_ENTRY, "options": {"prior": "mixture", "n_labels": 100}}, "n_labels is not used by the aae model"),
    ({**TINY_ENTRY, "options": {"device": "cuda"}}, "its options may be"),
    ({key: value for key, value in TINY_ENTRY.items() if key != "seed"}, "exactly the keys"),
    ({**TINY_ENTRY, "name": "../elsewhere"}, "not a plain folder name"),
])
def test_a_bad_registry_entry_is_one_line(make_pretrained, entry, message, tmp_path, capsys):
    registry = write_registry(tmp_path / "REGISTRY.json", [entry])
    assert make_pretrained.main(["--registry", str(registry), "--out", str(tmp_path / "out"),
                                 "--runs", str(tmp_path / "runs")]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert message in line and not (tmp_path / "runs").exists()


# -- train_or_load(pretrained=NAME): a shipped model stands for a chapter's run --------------------------------------
RUN = dict(model="cluster", recipe="quick", **TINY)  # a chapter asks the quick recipe; a shipped model is a full one


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_mnist, session_dirs):
    """A tiny clustering model trained with the full recipe on tiny_mnist and exported as 'tiny-cluster' (the quick
    recipe of the cluster model differs from the full one beyond the epochs: lr_schedule)."""
    with pytest.MonkeyPatch.context() as patcher:
        patcher.setenv("SAAE_FAST", "1")
        patcher.setenv("SAAE_CACHE_DIR", str(session_dirs.cache))
        trainer = training.train("cluster", data=tiny_mnist, progress=False, **TINY)
        folder = pretrained.export(trainer, tmp_path_factory.mktemp("shipped") / "tiny-cluster",
                                   training_seconds=TRAINING_SECONDS)
    return SimpleNamespace(trainer=trainer, folder=folder)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed when the block ends: nobody answers there


@pytest.fixture
def shelf(cluster, tmp_path, monkeypatch):
    """A checkout whose pretrained/ holds tiny-cluster, and a local server of a copy of it; this test's own cache
    and runs folders; the default address nowhere (no network), until a test points it at the server."""
    checkout = tmp_path / "repository" / "pretrained"
    shutil.copytree(cluster.folder, checkout / "tiny-cluster")
    (checkout / pretrained.REGISTRY_NAME).write_text('{"comment": "a test registry", "models": []}')
    monkeypatch.setattr(pretrained, "CHECKOUT", checkout)
    monkeypatch.setattr(pretrained, "default_base_url", closed_port_url)
    monkeypatch.setenv("SAAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAAE_RUNS_DIR", str(tmp_path / "runs"))
    served = tmp_path / "served"
    shutil.copytree(cluster.folder, served / "tiny-cluster")
    closing = []
    for server in http_server(served, "tiny-cluster"):
        yield SimpleNamespace(checkout=checkout, folder=checkout / "tiny-cluster", server=server,
                              runs=tmp_path / "runs", monkeypatch=monkeypatch, closing=closing)
    for thing in closing:
        thing.close()


def no_checkout(shelf):
    """As an installed saae_lib: no checkout beside the package, downloads from the server."""
    shelf.monkeypatch.setattr(pretrained, "CHECKOUT", shelf.checkout.parent / "elsewhere")
    shelf.monkeypatch.setattr(pretrained, "default_base_url", lambda: shelf.server.url)


def never(what):
    def fail(*args, **kwargs):
        pytest.fail(f"{what} must not happen here")
    return fail


def printed_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out.strip().splitlines()


def assert_is_the_exported_model(trainer, cluster, data):
    """The float16 weights of the exported model, its manifest, history and numbers: usable as a trained one."""
    manifest = manifest_of(cluster.folder)
    assert trainer.pretrained == manifest and trainer.history == manifest["history"] and trainer.smoke
    rounded = copy.deepcopy(cluster.trainer.model)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in cluster.trainer.model.state_dict().items()})
    images = data.test_images
    assert torch.equal(metrics.predict(trainer.model, images), metrics.predict(rounded, images))
    assert torch.equal(metrics.predict(trainer.model, images),
                       metrics.predict(pretrained.load(cluster.folder, data=data, device="cpu").model, images))
    assert evaluation.test_metrics(trainer) == manifest["test"]
    assert trainer.config == training.TrainConfig(**{**RUN, "recipe": "full"}).resolved()  # what it is: full


def test_the_label_learning_models_ship_without_their_discriminators(cluster, tiny_mnist, tmp_path, capsys):
    """Only training calls their discriminators: the folder leaves them out (the size budget); the loaded model keeps
    them in shape and refuses to run them, in one line; everything else is the float16 model."""
    model = cluster.trainer.model
    weights = torch.load(cluster.folder / WEIGHTS_NAME, weights_only=True)
    left_out = ("style_discriminator", "label_discriminator")
    kept = {key for key in model.state_dict() if key.split(".")[0] not in left_out}
    assert set(weights) == kept and len(kept) < len(model.state_dict())
    loaded = pretrained.load(cluster.folder, data=tiny_mnist, device="cpu")
    assert_is_the_exported_model(loaded, cluster, tiny_mnist)
    assert [p.shape for p in loaded.model.label_discriminator.parameters()] == [
        p.shape for p in model.label_discriminator.parameters()]
    for name in ("style_discriminator", "label_discriminator"):
        with pytest.raises(PretrainedError, match=f"without its {name}, which only training uses") as error:
            getattr(loaded.model, name)(torch.zeros(1, getattr(model, name).in_features))
        assert "\n" not in str(error.value)
    # a folder that ships them (or part of one) is read as it is: all of a module, or none of it
    partial = Path(shutil.copytree(cluster.folder, tmp_path / "partial"))
    full = {**weights, **{key: value.half() for key, value in model.state_dict().items()
                          if key.startswith("style_discriminator.")}}
    save_weights({key: value for key, value in full.items() if key != "style_discriminator.0.bias"}, partial)
    with pytest.raises(PretrainedError, match="style_discriminator.0.bias is missing"):
        pretrained.load(partial, data=tiny_mnist, device="cpu")
    save_weights(full, partial)
    shipped_style = pretrained.load(partial, data=tiny_mnist, device="cpu").model.style_discriminator
    assert torch.equal(shipped_style[0].weight, model.style_discriminator[0].weight.half().float())


def test_train_or_load_loads_the_checkouts_pretrained_model(shelf, cluster, tiny_mnist, monkeypatch, capsys):
    monkeypatch.setattr(training.Trainer, "fit", never("training"))
    monkeypatch.setattr(pretrained, "fetch", never("a download"))
    trainer = saae_lib.train_or_load("cluster_16", data=tiny_mnist, progress=False, pretrained="tiny-cluster", **RUN)
    assert_is_the_exported_model(trainer, cluster, tiny_mnist)
    manifest = manifest_of(cluster.folder)
    lines = printed_lines(capsys)
    assert lines[0] == ("loaded 'cluster_16' from the pretrained model 'tiny-cluster' "
                        f"({checkpoints.shown(shelf.folder)}, this checkout): trained elsewhere, not here")
    assert lines[1].startswith("  recipe: cluster, full recipe, 1 epoch, seed 0; other than the defaults: ")
    assert all(part in lines[1] for part in ("hidden (32, 32)", "batch_size 100", "precision fp32"))
    assert "lr_schedule" not in lines[1]  # the full recipe's own
    assert lines[2] == (f"  trained in {TRAINING_SECONDS:.1f} s on {manifest['machine']['cpu']} (cpu, fp32), "
                        f"saae_lib {saae_lib.__version__}")
    for line, numbers in ((lines[3], manifest["validation"]), (lines[4], manifest["test"])):
        assert numbers and all(f"{key} {pretrained.value_text(value)}" in line for key, value in numbers.items()
                               if key not in pretrained.NOT_NUMBERS)
    assert lines[3].startswith("  validation: val_") and lines[4].startswith("  test: test_")
    assert lines[5:] == [f"  {settings.SMOKE_NOTE}"]
    assert not shelf.runs.exists()  # nothing trained, nothing saved


def test_train_or_load_downloads_the_pretrained_model_into_the_cache(shelf, cluster, tiny_mnist, monkeypatch, capsys):
    """Without a checkout (saae_lib installed, as in Colab): fetched once into the cache, which it names, with how
    to keep it; then used from there without the network."""
    no_checkout(shelf)
    monkeypatch.delenv("SAAE_CACHE_DIR")
    monkeypatch.setenv("HOME", str(shelf.checkout.parent.parent / "home"))
    monkeypatch.setattr(training.Trainer, "fit", never("training"))
    trainer = saae_lib.train_or_load("cluster_16", data=tiny_mnist, progress=False, pretrained="tiny-cluster", **RUN)
    assert_is_the_exported_model(trainer, cluster, tiny_mnist)
    cache = pretrained.cache_folder("tiny-cluster")
    assert cache.is_relative_to(shelf.checkout.parent.parent / "home")
    lines = printed_lines(capsys)
    size = sum(entry["bytes"] for entry in manifest_of(cluster.folder)["files"].values())
    assert lines[0] == f"downloaded the pretrained model 'tiny-cluster' ({size / 1e6:.1f} MB) into {cache}"
    assert lines[1] == pretrained.COLAB_HINT and "SAAE_CACHE_DIR" in lines[1] and "Drive" in lines[1]
    assert lines[2].startswith("loaded 'cluster_16' from the pretrained model 'tiny-cluster' (")
    assert "downloaded" in lines[2]
    shelf.server.stop()
    again = saae_lib.train_or_load("cluster_16", data=tiny_mnist, progress=False, pretrained="tiny-cluster", **RUN)
    assert_is_the_exported_model(again, cluster, tiny_mnist)
    lines = printed_lines(capsys)
    assert lines[0].startswith("loaded 'cluster_16' from the pretrained model") and "the cache" in lines[0]
    assert not any("downloaded" in line for line in lines)


def test_train_or_load_trains_with_train_true_or_on_a_gpu(shelf, tiny_mnist, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "stand_in", never("the pretrained model"))
    trainer = saae_lib.train_or_load("cluster_16", data=tiny_mnist, progress=False, pretrained="tiny-cluster",
                                     train=True, **RUN)
    assert trainer.pretrained is None and trainer.config.recipe == "quick"
    assert printed_lines(capsys)[0].startswith("trained 'cluster_16': 1 epochs")
    assert (shelf.runs / "cluster_16" / CHECKPOINT_NAME).is_file()
    monkeypatch.setattr(checkpoints, "machine_recipe", lambda device=None: "full")  # as where it would train on CUDA
    again = saae_lib.train_or_load("cluster_16", data=tiny_mnist, progress=False, pretrained="tiny-cluster", **RUN)
    assert again.pretrained is None and printed_lines(capsys)[0].startswith("loaded 'cluster_16' (1 epochs, trained")


def other_data(data):
    return sdata.MNIST(train_images=data.train_images[:500], train_labels=data.train_labels[:500],
                       val_images=data.val_images, val_labels=data.val_labels, test_images=data.test_images,
                       test_labels=data.test_labels, device=data.device)


def gone_from_the_checkout(shelf):
    shelf.monkeypatch.setattr(pretrained, "CHECKOUT", shelf.checkout.parent / "elsewhere")  # and no network


def server_down(shelf):
    no_checkout(shelf)
    shelf.server.stop()


def tampered_on_the_server(shelf):
    no_checkout(shelf)
    flip_a_byte(shelf.server.files)


def not_published(shelf):
    no_checkout(shelf)
    shutil.rmtree(shelf.server.files)


def silent_server(shelf):
    silent = socket.socket()  # accepts connections (the kernel does) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    shelf.closing.append(silent)
    gone_from_the_checkout(shelf)
    shelf.monkeypatch.setattr(pretrained, "default_base_url", lambda: f"http://127.0.0.1:{silent.getsockname()[1]}")
    shelf.monkeypatch.setattr(pretrained, "DEFAULT_TIMEOUT_S", 0.5)


def a_real_run(shelf):
    shelf.monkeypatch.setenv("SAAE_FAST", "0")


# fault -> (what it does to the shelf, the run's options as changed, its data as changed, what the line says)
PRETRAINED_FAULTS = {
    "tampered file in the checkout": (lambda shelf: flip_a_byte(shelf.folder), {}, None,
                                      f"{WEIGHTS_NAME} does not match its manifest"),
    "tampered file on the server": (tampered_on_the_server, {}, None,
                                    f"tiny-cluster/{WEIGHTS_NAME} does not match its manifest"),
    "server down": (server_down, {}, None, "cannot reach"),
    "no network": (gone_from_the_checkout, {}, None, "cannot reach"),
    "timeout": (silent_server, {}, None, "did not answer within 0.5 s"),
    "not published": (not_published, {}, None, "HTTP 404"),
    "other epochs": (None, {"epochs": 2}, None, "tiny-cluster was trained with other settings (epochs 1, this run 2)"),
    "other seed": (None, {"seed": 1}, None, "tiny-cluster was trained with other settings (seed 0, this run 1)"),
    "a real run": (a_real_run, {}, None, "tiny-cluster is a smoke-mode model and this is a real run"),
    "other data": (None, {}, other_data, "tiny-cluster was trained on other data (600/200/200"),
}


@pytest.mark.parametrize("fault", PRETRAINED_FAULTS)
def test_a_pretrained_model_that_cannot_stand_for_the_run_is_one_line_then_training(fault, shelf, tiny_mnist,
                                                                                      capsys):
    change, changed_options, changed_data, message = PRETRAINED_FAULTS[fault]
    if change is not None:
        change(shelf)
    options = {**RUN, **changed_options}
    data = tiny_mnist if changed_data is None else changed_data(tiny_mnist)
    trainer = saae_lib.train_or_load("cluster_16", data=data, progress=False, pretrained="tiny-cluster", **options)
    lines = printed_lines(capsys)
    assert len(lines) == 2, lines
    assert message in lines[0] and lines[0].endswith("; training 'cluster_16' instead")
    assert lines[1].startswith("trained 'cluster_16': ")
    assert trainer.pretrained is None and trainer.config.recipe == "quick"  # the run as asked, trained here
    assert len(trainer.data.train_images) == len(data.train_images)
    # next time: the same line, and the run saved in runs/ is reused
    saae_lib.train_or_load("cluster_16", data=data, progress=False, pretrained="tiny-cluster", **options)
    lines = printed_lines(capsys)
    assert message in lines[0] and lines[0].endswith(
        f"; trying {checkpoints.shown(shelf.runs / 'cluster_16' / CHECKPOINT_NAME)} instead")
    assert lines[1].startswith("loaded 'cluster_16' (1 epochs, trained earlier)") or fault == "other epochs"


def test_train_false_never_trains_and_says_why_in_one_line(shelf, tiny_mnist, monkeypatch, capsys):
    monkeypatch.setattr(training.Trainer, "fit", never("training"))
    monkeypatch.setattr(checkpoints, "machine_recipe", lambda device=None: "full")  # even where it would train
    trainer = saae_lib.train_or_load("cluster_16", data=tiny_mnist, progress=False, pretrained="tiny-cluster",
                                     train=False, **RUN)
    assert trainer.pretrained is not None
    capsys.readouterr()
    monkeypatch.setattr(pretrained, "CHECKOUT", shelf.checkout.parent / "elsewhere")  # and no network
    with pytest.raises(PretrainedError) as error:
        saae_lib.train_or_load("cluster_16", data=tiny_mnist, progress=False, pretrained="tiny-cluster",
                               train=False, **RUN)
    message = str(error.value)
    assert "\n" not in message and "cannot reach" in message
    assert message.startswith("train_or_load('cluster_16', pretrained='tiny-cluster', train=False) has no model")
    assert capsys.readouterr().out == "" and not shelf.runs.exists()
