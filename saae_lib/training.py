"""One training loop for every model: the configuration of a run, and the Trainer that runs it.

Each model (models.py) brings its phases and its `training_step`; the loop here only feeds it batches, keeps the
history and validates after every epoch. A step runs the model's phases in order, each phase one optimizer update:
  ae      reconstruction
  aae     reconstruction -> discriminator (prior samples vs codes) -> generator (encoder fools discriminator)
  saae    the same, with the one-hot label fed to the decoder
  semi    reconstruction -> both discriminators -> generator -> cross-entropy on a labeled batch
  cluster semi without labels: k categories play the clusters (kept in use by a batch balance term)
  supervised  the semi model's encoder with only the cross-entropy phase: the baseline semi must beat
"""

import math
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, fields, replace

import torch

from . import metrics, settings
from .data import MNIST, TRAIN_IMAGES, batches, labeled_subset, load_mnist
from .models import MODELS

with warnings.catch_warnings():  # without ipywidgets, tqdm.auto falls back to text bars: fine, no need to warn
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

GENERIC_DEFAULTS = dict(lr_schedule="constant")  # for models whose defaults do not say
DEFAULTS = {kind: {**GENERIC_DEFAULTS, **model.defaults} for kind, model in MODELS.items()}
FAST_EPOCHS = 2
PRECISIONS = ("auto", "bf16", "fp32")
LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """An option that the run cannot use: `option` names it (a TrainConfig field; None for a combination)."""

    def __init__(self, option: str | None, message: str):
        super().__init__(message)
        self.option = option


@dataclass
class TrainConfig:
    """Everything that defines a training run; None means "the model's default" (see DEFAULTS).

    The options of the first block apply to every model; each of the second block applies only to the models whose
    class lists it in `options` (setting it for another model is an error, never silently ignored).
    """

    model: str = "aae"
    epochs: int | None = None
    batch_size: int | None = None
    latent_dim: int | None = None
    hidden: tuple[int, ...] = (1000, 1000)
    lr: float | None = None  # reconstruction phase (and cross-entropy phase)
    lr_schedule: str | None = None  # "constant"; "cosine": every phase's rate decays to ~0 over the epochs (lr_factor)
    precision: str = "auto"  # "auto" (bf16 on CPUs that have it, else fp32), "bf16" or "fp32"
    seed: int = 0
    device: str = "auto"
    validation_size: int = 5000  # training images held out for validation (load_mnist's split)

    prior: str | None = None  # aae/saae: "gaussian", "mixture" or "swiss_roll"
    prior_std: float | None = None  # Gaussian priors' standard deviation (default 1)
    label_aware: bool | None = None  # aae/saae: the discriminator sees the label, matching q(z|y) to p(z|y)
    n_labels: int | None = None  # semi/supervised: size of the class-balanced labeled subset
    n_clusters: int | None = None  # cluster: number of categories
    input_noise: float | None = None  # semi/cluster/supervised: std of Gaussian noise added to encoder inputs
    balance: float | None = None  # semi/cluster: weight of the batch balance term (models.balance_penalty)
    adversarial_lr: float | None = None  # discriminator and generator phases
    batch_norm: bool | None = None  # semi/cluster/supervised: batch norm in the encoder's hidden layers

    def resolved(self) -> "TrainConfig":
        """Refuse unknown models, options the model does not use and out-of-range values; fill in the model's
        defaults. Smoke mode caps the default number of epochs."""
        if self.model not in MODELS:
            raise ConfigError("model", f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        model = MODELS[self.model]
        for option in MODEL_OPTIONS:
            if getattr(self, option) is not None and option not in model.options:
                users = [kind for kind, cls in MODELS.items() if option in cls.options]
                raise ConfigError(option, f"{option} is not used by the {self.model} model "
                                          f"(it is used by {', '.join(users)})")
        defaults = {**GENERIC_DEFAULTS, **model.defaults}
        filled = {key: value for key, value in defaults.items() if getattr(self, key) is None}
        if "epochs" in filled and settings.FAST:
            filled["epochs"] = min(filled["epochs"], FAST_EPOCHS)
        config = replace(self, **filled, hidden=tuple(self.hidden) if _is_sequence(self.hidden) else self.hidden)
        for option, check in CHECKS.items():
            value = getattr(config, option)
            if value is not None and not check.accepts(value):
                raise ConfigError(option, f"{option} must be {check.description}, got {value!r}")
        try:
            model.check_config(config)
        except ValueError as error:
            raise ConfigError(getattr(error, "option", None), str(error)) from None
        return config


def _is_sequence(value) -> bool:
    return isinstance(value, (list, tuple))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Check:
    accepts: object
    description: str


CHECKS = {
    "epochs": Check(lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "batch_size": Check(lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "latent_dim": Check(lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "hidden": Check(lambda v: _is_sequence(v) and len(v) >= 1 and all(_is_int(n) and n >= 1 for n in v),
                    "one or more positive layer widths"),
    "lr": Check(lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "precision": Check(lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "lr_schedule": Check(lambda v: v in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
    "seed": Check(lambda v: _is_int(v) and 0 <= v < 2**63, "an integer in [0, 2**63)"),
    "device": Check(lambda v: isinstance(v, str) and bool(v), "a device name ('auto', 'cpu', 'cuda', 'mps')"),
    "validation_size": Check(lambda v: _is_int(v) and 0 <= v < TRAIN_IMAGES, f"an integer in [0, {TRAIN_IMAGES})"),
    "prior_std": Check(lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "label_aware": Check(lambda v: isinstance(v, bool), "True or False"),
    "n_labels": Check(lambda v: _is_int(v) and 10 <= v <= TRAIN_IMAGES, f"an integer in [10, {TRAIN_IMAGES}]"),
    "n_clusters": Check(lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "input_noise": Check(lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "balance": Check(lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "adversarial_lr": Check(lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "batch_norm": Check(lambda v: isinstance(v, bool), "True or False"),
}
MODEL_OPTIONS = tuple(dict.fromkeys(option for model in MODELS.values() for option in model.options))
CONFIG_FIELDS = tuple(field.name for field in fields(TrainConfig))


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The learning rates of epoch `epoch` (1-based) of `epochs`, as a fraction of the configured ones.

    "cosine" ends the adversarial game at rest instead of wherever its last swing was: 1 in the first epoch, then
    half a cosine down to 0.5 * (1 + cos(pi * (epochs - 1) / epochs)), about 1 % of the full rate for 15 epochs;
    epochs beyond `epochs` keep that last rate."""
    if schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (min(epoch, epochs) - 1) / epochs))


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


class Trainer:
    """Owns a model, its optimizers, the random generator and the history; `fit` runs the shared loop.

    `state` (a checkpoint's contents, see checkpoints.py) restores a saved run; it is checked before any data is
    loaded. Nothing here touches the caller's global random generators.
    """

    def __init__(self, config: TrainConfig, data: MNIST | None = None, state: dict | None = None):
        self.config = config.resolved()
        self.device = settings.pick_device(self.config.device)
        if self.config.precision == "bf16" and not bf16_supported(self.device):
            raise ConfigError("precision", f"bf16 is not supported on {self.device}: use precision='fp32'")
        # "auto" uses bf16 only on CPUs with bf16 units, where these matmul-bound MLPs run about 3x faster; on a GPU
        # the epoch is bound by kernel launches, not arithmetic, and autocast's casts made it slower.
        self.use_bf16 = self.config.precision == "bf16" or (
            self.config.precision == "auto" and self.device.type == "cpu" and bf16_supported(self.device))
        with torch.random.fork_rng(devices=[]):  # initialise from the run's seed, leave the caller's stream alone
            torch.manual_seed(self.config.seed)
            self.model = MODELS[self.config.model].from_config(self.config).to(self.device)
        phases = self.model.phases(self.config)
        self.optimizers = {name: self.adam(modules, lr) for name, (modules, lr) in phases.items()}
        self.base_lrs = {name: lr for name, (_, lr) in phases.items()}
        self.generator = torch.Generator(self.device).manual_seed(self.config.seed)
        self.history: list[dict] = []
        self.smoke = False  # trained (partly) in smoke mode: its numbers are not real results
        if state is not None:
            self.load_state_dict(state)
        # Smoke mode sets the data and the default epochs, both fixed here, not the loop.
        self.smoke = self.smoke or settings.FAST
        if data is None:
            data = load_mnist(device=self.device, validation_size=self.config.validation_size)
        elif data.validation_size is not None and data.validation_size != self.config.validation_size:
            raise ConfigError("validation_size", f"the data holds out {data.validation_size} validation images, the "
                                                 f"config asks for validation_size={self.config.validation_size}")
        self.data = data.to(self.device)
        self.labeled = None
        if self.config.n_labels is not None:
            index = labeled_subset(self.data.train_labels, self.config.n_labels, seed=self.config.seed)
            index = index.to(self.device)
            self.labeled = (self.data.train_images[index], self.data.train_labels[index])

    def adam(self, modules, lr) -> torch.optim.Optimizer:
        params = [p for module in modules for p in module.parameters()]
        # The fused kernel updates all tensors at once; it exists for CPU and CUDA.
        return torch.optim.Adam(params, lr=lr, fused=self.device.type in {"cpu", "cuda"})

    # -- the shared loop ------------------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None, callback=None, progress: bool | None = None) -> list[dict]:
        """Train until `epochs` epochs are done in total (default: the config's); returns the history.

        callback(trainer, record) runs after every epoch; progress: show a tqdm bar (default on, unless
        SAAE_PROGRESS=0)."""
        total = self.config.epochs if epochs is None else epochs
        progress = settings.show_progress(progress)
        bar = tqdm(range(len(self.history) + 1, total + 1), desc=f"{self.config.model} epochs",
                   disable=not progress, leave=True)
        for epoch in bar:
            start = time.perf_counter()
            self.set_learning_rates(lr_factor(self.config.lr_schedule, epoch, self.config.epochs))
            self.model.train()
            sums, n_batches = defaultdict(float), 0
            for x, y in batches(self.data.train_images, self.data.train_labels, batch_size=self.config.batch_size,
                                generator=self.generator):
                for name, loss in self.model.training_step(x, y, self).items():
                    sums[name] = sums[name] + loss.detach()  # stays a tensor: no device sync per batch
                n_batches += 1
            record = {"epoch": epoch, **{name: float(total_loss) / n_batches for name, total_loss in sums.items()}}
            if not all(math.isfinite(value) for value in record.values()):
                raise FloatingPointError(
                    f"non-finite loss in epoch {epoch}: {record}. Lower the learning rates (lr, adversarial_lr) "
                    "or use precision='fp32'.")
            record["seconds"] = time.perf_counter() - start
            record.update(self.validate())
            self.history.append(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
            if callback is not None:
                callback(self, record)
        return self.history

    @torch.no_grad()
    def validate(self) -> dict:
        """Numbers on the validation split (never the test set), for curves and model selection."""
        self.model.eval()
        images, labels = self.data.val_images, self.data.val_labels
        if len(images) == 0:
            return {}
        result = {}
        if "reconstruction" in self.model.measures:
            result["val_reconstruction"] = metrics.reconstruction_error(self.model, images, labels)
        if "classification" in self.model.measures:
            result["val_error"] = metrics.classification_error(metrics.predict(self.model, images), labels)
        return result

    def set_learning_rates(self, factor: float) -> None:
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = self.base_lrs[name] * factor

    # -- what the models' steps share ------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def update(self, phase: str, loss: torch.Tensor) -> torch.Tensor:
        optimizer = self.optimizers[phase]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def sample_prior(self, prior, n, labels=None):
        return prior.sample(n, labels=labels, generator=self.generator, device=self.device)

    def noisy(self, x):
        if not self.config.input_noise:
            return x
        noise = torch.randn(x.shape, generator=self.generator, device=x.device)
        return x + self.config.input_noise * noise

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
            "history": self.history,
            "smoke": self.smoke or settings.FAST,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved run; ValueError (naming what does not fit) if the state is not one of this model's."""
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, TypeError, AttributeError) as error:
            first = str(error).strip().splitlines()[:2]
            raise ValueError(f"its weights do not fit the {self.config.model} model ({' '.join(first)})") from None
        if set(state["optimizers"]) != set(self.optimizers):
            raise ValueError(f"it has optimizers {sorted(state['optimizers'])}, the {self.config.model} model "
                             f"needs {sorted(self.optimizers)}")
        try:
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"its optimizer states do not fit the model ({error})") from None
        if state["generator_device"] == self.device.type:
            try:
                self.generator.set_state(state["generator"])
            except (RuntimeError, TypeError) as error:
                raise ValueError(f"its random generator state is unusable ({error})") from None
        else:
            warnings.warn(f"the random stream was saved on {state['generator_device']}, this run is on "
                          f"{self.device.type}: further training draws a fresh stream, unlike an uninterrupted run",
                          stacklevel=2)
        if not isinstance(state["history"], list) or not all(isinstance(r, dict) for r in state["history"]):
            raise ValueError("its history is not a list of per-epoch records")
        self.history = list(state["history"])
        self.smoke = bool(state["smoke"])


def train(model: str = "aae", data: MNIST | None = None, callback=None, progress=None, **options) -> Trainer:
    """Build and train a model in one call: `trainer = train("aae", epochs=10, prior="mixture")`."""
    trainer = Trainer(TrainConfig(model=model, **options), data)
    trainer.fit(callback=callback, progress=progress)
    return trainer
