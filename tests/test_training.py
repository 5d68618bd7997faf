"""Tests for saae_lib.training: configs, the shared loop for all five models, learning, determinism, NaN guard."""

import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saae_lib import evaluation, models, training
from saae_lib.checkpoints import load_checkpoint, save_checkpoint
from saae_lib.metrics import predict, reconstruction_error
from saae_lib.models import MODELS, balance_penalty
from saae_lib.training import DEFAULTS, MODEL_OPTIONS, TrainConfig, Trainer, train

# What the loop itself adds to an epoch's record, for each of a model's measures (the model's losses are its own).
VALIDATION_KEYS = {"reconstruction": "val_reconstruction", "classification": "val_error"}


def validation_keys(kind) -> set:
    return {VALIDATION_KEYS[m] for m in MODELS[kind].measures if m in VALIDATION_KEYS}


def options_for(kind) -> dict:
    return dict(n_clusters=4) if "n_clusters" in MODELS[kind].uses() else {}


def without_time(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def parameters(model):
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def same_parameters(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- TrainConfig ------------------------------------------------------------------------------------------------
def test_models_and_defaults_agree():
    assert set(MODELS) == set(DEFAULTS) >= {"ae", "aae", "saae", "semi", "cluster", "supervised"}


def test_resolved_fills_model_defaults(full):
    semi = TrainConfig(model="semi").resolved()
    assert (semi.epochs, semi.latent_dim, semi.n_labels) == (
        DEFAULTS["semi"]["epochs"], DEFAULTS["semi"]["latent_dim"], DEFAULTS["semi"]["n_labels"])
    cluster = TrainConfig(model="cluster").resolved()
    assert cluster.n_clusters == DEFAULTS["cluster"]["n_clusters"]
    assert TrainConfig(model="ae", latent_dim=7).resolved().latent_dim == 7  # explicit values win
    assert TrainConfig(model="ae", hidden=[8, 8]).resolved().hidden == (8, 8)


def test_smoke_mode_caps_default_epochs_only(fast):
    assert TrainConfig(model="aae").resolved().epochs == training.FAST_EPOCHS
    assert TrainConfig(model="aae", epochs=5).resolved().epochs == 5


@pytest.mark.parametrize("options, match", [
    (dict(epochs=0), "epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(latent_dim=0), "latent_dim"),
    (dict(model="no-such-model"), "unknown model"),
    (dict(precision="fp8"), "precision"),
    (dict(model="aae", prior="mixture", latent_dim=10), "2-D"),
    (dict(model="aae", prior="laplace"), "prior must be one of gaussian, mixture, swiss_roll"),
    (dict(model="cluster", balance=-1.0), "balance"),
    (dict(model="aae", balance=3.0), "balance"),  # no categories to balance: not silently ignored
    (dict(model="semi", label_aware=True), "label_aware"),
])
def test_bad_configs_raise_value_error(options, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**options).resolved()


def test_trainer_rejects_a_bad_config_before_any_work(tiny_mnist):
    with pytest.raises(ValueError, match="epochs"):
        Trainer(TrainConfig(model="ae", epochs=0), tiny_mnist)


def test_semi_label_count_must_be_a_multiple_of_ten(tiny_mnist, tiny_options):
    with pytest.raises(ValueError, match="multiple of 10"):
        Trainer(TrainConfig(model="semi", epochs=1, n_labels=15, **tiny_options), tiny_mnist)


# -- the loop for every model -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_one_epoch(model, tiny_mnist, tiny_options):
    records = []
    trainer = train(model, data=tiny_mnist, epochs=1, progress=False, callback=lambda t, r: records.append(r),
                    **options_for(model), **tiny_options)
    assert len(trainer.history) == 1 and records == trainer.history
    record = trainer.history[0]
    losses = set(record) - {"epoch", "seconds"} - validation_keys(model)
    assert set(trainer.model.phases()) <= losses and validation_keys(model) <= set(record)
    assert record["epoch"] == 1
    assert all(isinstance(v, float) for k, v in record.items() if k != "epoch")
    if "reconstruction" in record:
        assert 0 < record["reconstruction"] < 1  # binary cross-entropy per pixel
        assert 0 < record["val_reconstruction"] < 1
    if "val_error" in record:
        assert 0 <= record["val_error"] <= 1
    if "n_labels" in MODELS[model].uses():
        assert record["classification"] > 0
        labeled_images, labeled_labels = trainer.model.labeled
        assert labeled_images.shape == (DEFAULTS[model]["n_labels"], 784)
        assert torch.equal(torch.bincount(labeled_labels, minlength=10),
                           torch.full((10,), DEFAULTS[model]["n_labels"] // 10))
    if hasattr(trainer.model, "classify"):
        predicted = predict(trainer.model, tiny_mnist.test_images)
        n_classes = trainer.model.n_classes
        assert predicted.shape == (len(tiny_mnist.test_images),)
        assert 0 <= predicted.min() and predicted.max() < n_classes


@pytest.mark.parametrize("prior", ["mixture", "swiss_roll"])
def test_label_aware_aae_trains(prior, tiny_mnist, tiny_options):
    trainer = train("aae", data=tiny_mnist, epochs=1, progress=False, prior=prior, label_aware=True, **tiny_options)
    assert trainer.model.label_aware and trainer.model.prior.n_classes == 10
    assert set(trainer.history[0]) >= set(trainer.model.phases())


def test_class_conditional_saae_trains(tiny_mnist, tiny_options):
    trainer = train("saae", data=tiny_mnist, epochs=1, progress=False, label_aware=True, **tiny_options)
    assert trainer.model.label_aware and trainer.model.discriminator.in_features == 12
    assert set(trainer.history[0]) >= set(trainer.model.phases())


def test_balance_penalty_sees_what_one_code_at_a_time_cannot():
    """Confident one-hot codes pass the categorical discriminator one by one; only the batch shows the collapse."""
    uniform_use = torch.eye(4).repeat(3, 1)  # every category used equally
    collapsed = torch.eye(4)[[0, 0, 0, 1]].repeat(3, 1)
    assert balance_penalty(uniform_use).item() == pytest.approx(0.0, abs=1e-6)
    assert balance_penalty(collapsed).item() > 0.4
    assert balance_penalty(torch.eye(4)[[2] * 12]).item() == pytest.approx(math.log(4), rel=1e-5)


def test_balance_weight_changes_the_generator_update(tiny_mnist, tiny_options):
    options = dict(epochs=1, n_clusters=4, progress=False, **tiny_options)
    plain, balanced = train("cluster", data=tiny_mnist, **options), train(
        "cluster", data=tiny_mnist, balance=5.0, **options)
    assert plain.history[0]["reconstruction"] != balanced.history[0]["reconstruction"]


def test_training_lowers_the_reconstruction_loss(tiny_mnist, tiny_options):
    trainer = Trainer(TrainConfig(model="ae", epochs=3, **tiny_options), tiny_mnist)
    fixed = tiny_mnist.val_images[:100]
    before = reconstruction_error(trainer.model, fixed)
    history = trainer.fit(progress=False)
    after = reconstruction_error(trainer.model, fixed)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[2]["reconstruction"] < history[0]["reconstruction"]
    assert history[2]["val_reconstruction"] < history[0]["val_reconstruction"]
    assert after < before


def test_fit_continues_up_to_the_requested_total(tiny_mnist, tiny_options):
    trainer = Trainer(TrainConfig(model="ae", epochs=1, **tiny_options), tiny_mnist)
    trainer.fit(progress=False)
    trainer.fit(epochs=2, progress=False)
    assert [r["epoch"] for r in trainer.history] == [1, 2]
    trainer.fit(epochs=2, progress=False)  # already there: nothing to do
    assert len(trainer.history) == 2


def test_same_seed_same_run_other_seed_other_run(tiny_mnist, tiny_options):
    runs = [train("aae", data=tiny_mnist, epochs=2, seed=seed, progress=False, **tiny_options) for seed in (0, 0, 1)]
    assert without_time(runs[0].history) == without_time(runs[1].history)
    assert same_parameters(parameters(runs[0].model), parameters(runs[1].model))
    assert reconstruction_error(runs[0].model, tiny_mnist.test_images) == reconstruction_error(
        runs[1].model, tiny_mnist.test_images)
    assert without_time(runs[0].history) != without_time(runs[2].history)
    assert not same_parameters(parameters(runs[0].model), parameters(runs[2].model))


def test_semi_is_deterministic(tiny_mnist, tiny_options):
    a, b = (train("semi", data=tiny_mnist, epochs=1, seed=3, progress=False, **tiny_options) for _ in range(2))
    assert without_time(a.history) == without_time(b.history)
    assert torch.equal(predict(a.model, tiny_mnist.test_images), predict(b.model, tiny_mnist.test_images))


def test_non_finite_loss_raises_with_advice(monkeypatch, tiny_mnist, tiny_options):
    def poisoned(logits, x):
        return F.binary_cross_entropy_with_logits(logits.float(), x) * float("nan")

    monkeypatch.setattr(models, "reconstruction_loss", poisoned)
    trainer = Trainer(TrainConfig(model="ae", epochs=1, **tiny_options), tiny_mnist)
    with pytest.raises(FloatingPointError, match="(?s)epoch 1.*Lower the learning rates"):
        trainer.fit(progress=False)
    assert trainer.history == []  # the broken epoch is not recorded


def test_huge_learning_rate_is_caught(tiny_mnist, tiny_options):
    trainer = Trainer(TrainConfig(model="aae", epochs=3, lr=1e12, adversarial_lr=1e12, **tiny_options), tiny_mnist)
    with pytest.raises(FloatingPointError, match="adversarial_lr"):
        trainer.fit(progress=False)


@pytest.mark.skipif(not training.bf16_native(torch.device("cpu")), reason="no bf16 on this CPU")
def test_bf16_on_cpu(tiny_mnist, tiny_options):
    trainer = train("aae", data=tiny_mnist, epochs=1, progress=False, **{**tiny_options, "precision": "bf16"})
    assert trainer.use_bf16
    assert 0 < trainer.history[0]["reconstruction"] < 1


def test_a_cuda_graph_is_refused_off_cuda(tiny_mnist, tiny_options):
    with pytest.raises(training.ConfigError, match="a CUDA graph needs a CUDA device, not cpu"):
        Trainer(TrainConfig(model="ae", cuda_graph="on", **tiny_options), tiny_mnist)
    with pytest.raises(training.ConfigError, match="cuda_graph must be one of auto, on, off"):
        TrainConfig(model="ae", cuda_graph="yes").resolved()
    assert not Trainer(TrainConfig(model="ae", **tiny_options), tiny_mnist).use_cuda_graph  # "auto" on a CPU


def test_saved_optimizer_states_hold_plain_learning_rates(tiny_mnist, tiny_options):
    """A checkpoint must load on any device: no GPU tensors (a CUDA graph's learning rates) in its optimizers."""
    trainer = train("aae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    for optimizer in trainer.state_dict()["optimizers"].values():
        assert all(type(group["lr"]) is float and not group["capturable"] for group in optimizer["param_groups"])


def test_fp32_does_not_autocast(tiny_mnist, tiny_options):
    trainer = Trainer(TrainConfig(model="ae", epochs=1, **tiny_options), tiny_mnist)
    assert not trainer.use_bf16


def test_validation_never_uses_the_test_set(monkeypatch, tiny_mnist, tiny_options):
    seen = []
    real = training.Trainer.validate

    def spy(self):
        seen.append(self.data.val_images.data_ptr())
        return real(self)

    monkeypatch.setattr(training.Trainer, "validate", spy)
    trainer = train("ae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    assert seen == [tiny_mnist.val_images.data_ptr()]
    assert trainer.history[0]["val_reconstruction"] == pytest.approx(
        reconstruction_error(trainer.model, tiny_mnist.val_images), rel=1e-6)


def test_settings_fast_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("SAAE_FAST", "1")
    fast_epochs = TrainConfig(model="ae").resolved().epochs
    monkeypatch.setenv("SAAE_FAST", "0")
    assert fast_epochs == training.FAST_EPOCHS < TrainConfig(model="ae").resolved().epochs


# -- strict configuration ---------------------------------------------------------------------------------------
UNUSED = [(option, kind) for option in MODEL_OPTIONS for kind, model in MODELS.items() if option not in model.uses()]
CANDIDATES = {bool: [False], int: [100, 16], float: [1.0, 0.3], tuple: [(1000, 1000)]}


def usual_value(option):
    """A value the option accepts: a model's default for it, else the first its declared type and check allow (so a
    new option needs no row here)."""
    for model in MODELS.values():
        if option in model.defaults:
            return model.defaults[option]
    declared = training.OPTIONS[option]
    candidates = declared.check.choices or CANDIDATES[declared.value_type]
    return next(value for value in candidates if declared.check.accepts(value))


@pytest.mark.parametrize("option, kind", UNUSED, ids=[f"{o}-{k}" for o, k in UNUSED])
def test_an_option_the_model_does_not_use_is_refused(option, kind):
    """Even at its usual value: a set option either changes the run or is refused."""
    with pytest.raises(training.ConfigError, match=f"{option} is not used by the {kind} model") as caught:
        TrainConfig(model=kind, **{option: usual_value(option)}).resolved()
    assert caught.value.option == option
    users = [k for k, model in MODELS.items() if option in model.uses()]
    assert f"(it is used by {', '.join(users)})" in str(caught.value)


@pytest.mark.parametrize("options, match", [
    (dict(model="cluster", balance=float("nan")), "balance must be a finite number"),
    (dict(model="semi", n_labels=-10), "n_labels must be an integer"),
    (dict(model="semi", n_labels=True), "n_labels must be an integer"),
    (dict(model="ae", lr=float("inf")), "lr must be a finite number > 0"),
    (dict(model="aae", adversarial_lr=0.0), "adversarial_lr must be a finite number > 0"),
    (dict(model="aae", prior_std=-1.0), "prior_std must be"),
    (dict(model="aae", prior="swiss_roll", prior_std=2.0), "prior_std sets the spread of the gaussian prior"),
    (dict(model="ae", hidden=()), "hidden must be"),
    (dict(model="ae", hidden=(100, 0)), "hidden must be"),
    (dict(model="ae", seed=-1), "seed must be"),
    (dict(model="ae", validation_size=60000), "validation_size must be"),
    (dict(model="semi", input_noise=-0.1), "input_noise must be"),
    (dict(model="cluster", n_clusters=1), "n_clusters must be"),
    (dict(model="aae", label_aware="yes"), "label_aware must be True or False"),
])
def test_out_of_range_values_are_refused(options, match):
    with pytest.raises(training.ConfigError, match=match):
        TrainConfig(**options).resolved()


def test_resolved_stores_none_for_options_a_model_does_not_use(full):
    config = TrainConfig(model="ae").resolved()
    assert all(getattr(config, option) is None for option in MODEL_OPTIONS)
    aae = TrainConfig(model="aae").resolved()
    assert (aae.prior, aae.label_aware, aae.n_labels, aae.balance) == ("gaussian", False, None, None)


def test_validation_size_sets_the_split(fast, isolated):
    trainer = Trainer(TrainConfig(model="ae", validation_size=300, epochs=1, hidden=(8,), device="cpu"))
    assert len(trainer.data.val_images) == 300 and trainer.data.validation_size == 300
    with pytest.raises(training.ConfigError, match="validation_size"):  # data split otherwise than the config says
        Trainer(TrainConfig(model="ae", validation_size=1000, hidden=(8,), device="cpu"), trainer.data)


# -- no global side effects ---------------------------------------------------------------------------------------
def global_random_states():
    return random.getstate(), np.random.get_state()[1].tolist(), torch.random.get_rng_state()


def test_building_and_loading_leave_the_callers_generators_alone(tmp_path, tiny_mnist, tiny_options):
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    before = global_random_states()
    trainer = train("semi", data=tiny_mnist, epochs=1, seed=5, progress=False, **tiny_options)
    save_checkpoint(trainer, tmp_path)
    load_checkpoint(tmp_path, data=tiny_mnist)
    after = global_random_states()
    assert before[0] == after[0] and before[1] == after[1] and torch.equal(before[2], after[2])
    # and the run itself does not depend on them: another global seed, the same model
    torch.manual_seed(999)
    again = train("semi", data=tiny_mnist, epochs=1, seed=5, progress=False, **tiny_options)
    assert same_parameters(parameters(trainer.model), parameters(again.model))


# -- learning-rate schedule ----------------------------------------------------------------------------------------
def test_lr_factor():
    assert [training.lr_factor("constant", e, 4) for e in (1, 4, 9)] == [1.0, 1.0, 1.0]
    cosine = [training.lr_factor("cosine", e, 4) for e in (1, 2, 3, 4, 5)]
    assert cosine[0] == 1.0 and cosine[2] == pytest.approx(0.5) and cosine[3] == pytest.approx(0.1464, abs=1e-4)
    assert cosine[4] == cosine[3]  # beyond the run's epochs: the last rate
    with pytest.raises(training.ConfigError, match="lr_schedule must be one of constant, cosine, step"):
        TrainConfig(model="ae", lr_schedule="linear").resolved()


def test_step_schedule_cuts_at_the_papers_fractions_of_the_run():
    # the paper's cuts at epochs 50 and 1000 of 5000
    assert [training.lr_factor("step", e, 5000) for e in (50, 51, 1000, 1001)] == pytest.approx([1, 0.1, 0.1, 0.01])
    # a short run still has a first epoch at the full rate and one at a tenth
    assert [training.lr_factor("step", e, 10) for e in (1, 2, 3)] == pytest.approx([1, 0.1, 0.01])


# -- recipes -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(MODELS))
def test_every_recipe_is_made_of_options_the_model_uses(kind):
    model = MODELS[kind]
    assert set(model.recipes) <= set(training.RECIPES) - {"full"}, "recipes other than full change the defaults"
    for recipe, changes in model.recipes.items():
        assert changes and set(changes) <= set(model.uses()) | set(training.GENERIC_DEFAULTS) | {"epochs"}, recipe
        assert any(model.defaults.get(k, training.GENERIC_DEFAULTS.get(k)) != v for k, v in changes.items()), \
            f"the {recipe} recipe of {kind} changes nothing"
    for recipe in training.RECIPES:
        TrainConfig(model=kind, recipe=recipe).resolved()  # each recipe is a valid run


def test_quick_recipe_fills_defaults_and_given_options_win():
    full, quick = (TrainConfig(model="semi", recipe=r).resolved() for r in ("full", "quick"))
    assert quick.epochs == MODELS["semi"].recipes["quick"]["epochs"] != full.epochs
    assert TrainConfig(model="semi", recipe="quick", epochs=7).resolved().epochs == 7
    assert TrainConfig(model="ae", recipe="quick").resolved() == replace(TrainConfig(model="ae").resolved(),
                                                                        recipe="quick")
    with pytest.raises(training.ConfigError, match="recipe must be one of full, quick"):
        TrainConfig(model="semi", recipe="fast").resolved()


# -- optimizers and corruptions --------------------------------------------------------------------------------------
def test_momentum_optimizer_trains_with_sgd(tiny_mnist, tiny_options):
    trainer = train("aae", data=tiny_mnist, epochs=1, optimizer="momentum", lr=0.05, adversarial_lr=0.05,
                    progress=False, **tiny_options)
    assert all(isinstance(o, torch.optim.SGD) and o.param_groups[0]["momentum"] == training.MOMENTUM
               for o in trainer.optimizers.values())
    assert math.isfinite(trainer.history[-1]["reconstruction"])
    with pytest.raises(training.ConfigError, match="CUDA graph replays Adam"):
        training.placement(TrainConfig(model="aae", optimizer="momentum", cuda_graph="on").resolved(),
                           torch.device("cuda"))


@pytest.mark.parametrize("corruption", [dict(input_dropout=0.2), dict(hidden_noise=0.3)])
def test_corruptions_change_training_and_not_evaluation(tiny_mnist, tiny_options, corruption):
    plain = train("semi", data=tiny_mnist, epochs=1, n_labels=20, progress=False, **tiny_options)
    corrupted = train("semi", data=tiny_mnist, epochs=1, n_labels=20, progress=False, **tiny_options, **corruption)
    assert without_time(plain.history) != without_time(corrupted.history)
    model, x = corrupted.model.eval(), tiny_mnist.test_images[:8]
    assert torch.equal(model.label_probabilities(x), model.label_probabilities(x))  # no noise when evaluating


def test_hidden_noise_follows_every_hidden_layer():
    encoder = models.SemiSupervisedEncoder(latent_dim=3, hidden=(8, 8, 8), batch_norm=True).train()
    x, seen = torch.rand(4, 784), []
    for relu in (m for m in encoder.modules() if isinstance(m, torch.nn.ReLU)):
        relu.register_forward_hook(lambda module, inputs, output: seen.append(output))
    generator = torch.Generator().manual_seed(0)
    encoder(x, hidden_noise=0.5, generator=generator)
    assert len(seen) == 3
    replay = torch.Generator().manual_seed(0)
    for _ in range(3):  # one draw per hidden layer, each the size of that layer's output
        torch.randn((4, 8), generator=replay)
    assert torch.equal(generator.get_state(), replay.get_state())


def test_corruptions_of_zero_draw_no_random_numbers(tiny_mnist, tiny_options):
    plain = train("semi", data=tiny_mnist, epochs=1, n_labels=20, progress=False, **tiny_options)
    zero = train("semi", data=tiny_mnist, epochs=1, n_labels=20, input_dropout=0.0, hidden_noise=0.0,
                 progress=False, **tiny_options)
    assert without_time(plain.history) == without_time(zero.history)


def test_input_dropout_drops_that_fraction_and_keeps_the_mean():
    x = torch.full((200, 784), 0.5)
    out = models.dropped(x, 0.2, torch.Generator().manual_seed(0))
    assert (out == 0).float().mean() == pytest.approx(0.2, abs=0.01)
    assert out.mean() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(training.ConfigError, match="input_dropout must be a number in"):
        TrainConfig(model="semi", input_dropout=1.0).resolved()


def test_cosine_schedule_changes_the_run_from_the_second_epoch(tiny_mnist, tiny_options):
    runs = {s: train("aae", data=tiny_mnist, epochs=3, lr_schedule=s, progress=False, **tiny_options)
            for s in ("constant", "cosine")}
    constant, cosine = (without_time(runs[s].history) for s in ("constant", "cosine"))
    assert constant[0] == cosine[0] and constant[1] != cosine[1]
    last = training.lr_factor("cosine", 3, 3)
    for name, optimizer in runs["cosine"].optimizers.items():
        assert optimizer.param_groups[0]["lr"] == pytest.approx(runs["cosine"].base_lrs[name] * last)


def test_cosine_schedule_resumes_exactly(tmp_path, tiny_mnist, tiny_options):
    straight = train("aae", data=tiny_mnist, epochs=3, lr_schedule="cosine", progress=False, **tiny_options)
    first = Trainer(TrainConfig(model="aae", epochs=3, lr_schedule="cosine", **tiny_options), tiny_mnist)
    first.fit(epochs=1, progress=False)
    save_checkpoint(first, tmp_path)
    resumed = load_checkpoint(tmp_path, data=tiny_mnist)
    resumed.fit(progress=False)
    assert without_time(resumed.history) == without_time(straight.history)
    assert same_parameters(parameters(resumed.model), parameters(straight.model))


def test_test_metrics_per_model_measure(tiny_mnist, tiny_options):
    mixture = train("aae", data=tiny_mnist, epochs=1, prior="mixture", label_aware=True, progress=False, **tiny_options)
    assert 0 <= evaluation.test_metrics(mixture)["component_accuracy"] <= 1
    gaussian = train("aae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    assert "component_accuracy" not in evaluation.test_metrics(gaussian)
    clusters = train("cluster", data=tiny_mnist, epochs=1, n_clusters=4, progress=False, **tiny_options)
    result = evaluation.test_metrics(clusters)
    assert 0 <= result["test_clustering_error"] <= 1 and 0 <= result["test_clustering_error_top_image"] <= 1


def test_validation_metrics_can_take_one_measure(tiny_mnist, tiny_options):
    gaussian = train("aae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    everything = evaluation.validation_metrics(gaussian)
    assert {"val_reconstruction_mse", "val_prior_match_mmd"} <= set(everything)
    only = evaluation.validation_metrics(gaussian, only=("prior_match",))
    assert only == {"val_prior_match_mmd": everything["val_prior_match_mmd"]}
