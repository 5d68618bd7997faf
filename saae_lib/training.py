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
CUDA_GRAPH_MODES = ("auto", "on", "off")


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
    precision: str = "auto"  # "auto" (bf16 on CPUs that have it and with a CUDA graph, else fp32), "bf16", "fp32"
    cuda_graph: str = "auto"  # replay the training step as a CUDA graph: "auto" (on CUDA devices), "on" or "off"
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
    "cuda_graph": Check(lambda v: v in CUDA_GRAPH_MODES, f"one of {', '.join(CUDA_GRAPH_MODES)}"),
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
        if self.config.cuda_graph == "on" and self.device.type != "cuda":
            raise ConfigError("cuda_graph", f"a CUDA graph needs a CUDA device, not {self.device}: use "
                                            "cuda_graph='auto' or 'off'")
        self.use_cuda_graph = self.config.cuda_graph == "on" or (
            self.config.cuda_graph == "auto" and self.device.type == "cuda")
        # "auto" uses bf16 on CPUs with bf16 units, where these matmul-bound MLPs run about 3x faster, and on a GPU
        # that replays the step as a CUDA graph (AAE epoch on an H200: 0.13 s vs 0.21 s in fp32). A GPU that
        # launches kernel by kernel is bound by the launches, and autocast's extra casts made it slower.
        self.use_bf16 = self.config.precision == "bf16" or (
            self.config.precision == "auto" and bf16_supported(self.device)
            and (self.device.type == "cpu" or self.use_cuda_graph))
        self.graphed_step = None  # made at the first fit, after any checkpoint is loaded
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
        # The fused kernel updates all tensors at once; it exists for CPU and CUDA. A CUDA graph replays the update
        # as recorded, so its step count and learning rate must be GPU tensors that change in place (capturable).
        if self.use_cuda_graph:
            return torch.optim.Adam(params, lr=torch.tensor(lr, device=self.device), fused=True, capturable=True)
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
        step = self.step_function()
        for epoch in bar:
            start = time.perf_counter()
            self.set_learning_rates(lr_factor(self.config.lr_schedule, epoch, self.config.epochs))
            self.model.train()
            sums, n_batches = defaultdict(float), 0
            for x, y in batches(self.data.train_images, self.data.train_labels, batch_size=self.config.batch_size,
                                generator=self.generator):
                for name, loss in step(x, y).items():
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

    def step_function(self):
        """The function that trains on one batch: the model's step, or its CUDA graph."""
        if not self.use_cuda_graph:
            return lambda x, y: self.model.training_step(x, y, self)
        if self.graphed_step is None:
            self.graphed_step = GraphedStep(self)
        return self.graphed_step

    def set_learning_rates(self, factor: float) -> None:
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                set_lr(group, self.base_lrs[name] * factor)

    # -- what the models' steps share ------------------------------------------------------------------------------
    def autocast(self):
        # A CUDA graph must not reuse weight casts cached outside its recording: no cache then.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16,
                              cache_enabled=not self.use_cuda_graph)

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
            "optimizers": {name: portable(opt.state_dict()) for name, opt in self.optimizers.items()},
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
                own = [{key: group[key] for key in ("lr", "fused", "capturable")} for group in optimizer.param_groups]
                optimizer.load_state_dict(state["optimizers"][name])
                for group, settings_of_this_run in zip(optimizer.param_groups, own, strict=True):
                    saved_lr = float(group["lr"])
                    group.update(settings_of_this_run)  # this run's form of lr (a GPU tensor with a CUDA graph)
                    set_lr(group, saved_lr)
                    for param in group["params"]:
                        if "step" in optimizer.state.get(param, {}) and group["capturable"]:
                            optimizer.state[param]["step"] = optimizer.state[param]["step"].to(self.device)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"its optimizer states do not fit the model ({error})") from None
        self.graphed_step = None  # a graph would still point at the optimizer state just replaced
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


def set_lr(group: dict, value: float) -> None:
    """Set a parameter group's learning rate in the form it has: a tensor in place (a CUDA graph reads it there)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def portable(optimizer_state: dict) -> dict:
    """An optimizer's state_dict that loads on any device: learning rates as numbers, not GPU tensors."""
    groups = [{**group, "lr": float(group["lr"]), "capturable": False} for group in optimizer_state["param_groups"]]
    return {**optimizer_state, "param_groups": groups}


class GraphedStep:
    """The model's training step recorded once as a CUDA graph, then replayed for every batch.

    On a GPU these small MLPs are bound by kernel launches (a step is about a thousand small kernels), not by
    arithmetic; one replay launches them all at once. The first `warmup` batches train eagerly on a side stream (as
    capture requires: cuBLAS and the optimizers set themselves up there); the next batch is copied into static input
    tensors and recorded, and every later batch of that shape is copied into them and replayed. A batch of another
    shape (a smaller last batch) trains eagerly. The random generator is registered with the graph, so each replay
    draws fresh prior samples and noise. The returned losses are overwritten by the next call: use them before it.
    """

    def __init__(self, trainer: Trainer, warmup: int = 3):
        self.trainer, self.warmup = trainer, warmup
        self.warmed_up = 0
        self.graph = None
        self.side_stream = torch.cuda.Stream(trainer.device)

    def eager(self, x, y):
        return self.trainer.model.training_step(x, y, self.trainer)

    def __call__(self, x, y):
        if self.graph is None and self.warmed_up < self.warmup:
            self.warmed_up += 1
            self.side_stream.wait_stream(torch.cuda.current_stream(self.trainer.device))
            with torch.cuda.stream(self.side_stream):
                # detached: a loss kept with its autograd graph into the next step upsets the recording's streams
                losses = {name: loss.detach() for name, loss in self.eager(x, y).items()}
            torch.cuda.current_stream(self.trainer.device).wait_stream(self.side_stream)
            return losses
        if self.graph is None:
            self.record(x, y)
        elif x.shape != self.x.shape:
            return self.eager(x, y)
        else:
            self.x.copy_(x)
            self.y.copy_(y)
        self.graph.replay()
        return self.losses

    def record(self, x, y):
        self.x, self.y = x.clone(), y.clone()
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.trainer.generator)
        with torch.cuda.graph(graph):
            self.losses = {name: loss.detach() for name, loss in self.eager(self.x, self.y).items()}
        self.graph = graph


def train(model: str = "aae", data: MNIST | None = None, callback=None, progress=None, **options) -> Trainer:
    """Build and train a model in one call: `trainer = train("aae", epochs=10, prior="mixture")`."""
    trainer = Trainer(TrainConfig(model=model, **options), data)
    trainer.fit(callback=callback, progress=progress)
    return trainer
