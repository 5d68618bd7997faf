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
import types
import typing
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields, replace

import torch

from . import metrics, settings
from .data import MNIST, TRAIN_IMAGES, batches, check_training_data, load_mnist
from .models import MODELS, Model
from .priors import PRIORS
from .settings import ConfigError

with warnings.catch_warnings():  # without ipywidgets, tqdm.auto falls back to text bars: fine, no need to warn
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

GENERIC_DEFAULTS = dict(lr_schedule="constant")  # for models whose defaults do not say


def defaults_of(model: type[Model], recipe: str = "full") -> dict:
    """A model's settings for a recipe (full: its `defaults`; quick: those with its `recipes["quick"]` changes),
    with those every model shares where it does not say (`resolved` asks this, not DEFAULTS, so that a model
    registered after import has its defaults too)."""
    return {**GENERIC_DEFAULTS, **model.defaults, **model.recipes.get(recipe, {})}


DEFAULTS = {kind: defaults_of(model) for kind, model in MODELS.items()}
FAST_EPOCHS = 2
PRECISIONS = ("auto", "bf16", "fp32")
LR_SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "momentum")
RECIPES = ("full", "quick")
MOMENTUM = 0.9  # of the momentum optimizer (SGD); the usual value: the paper's appendix is not checked yet
CUDA_GRAPH_MODES = ("auto", "on", "off")


# -- options: each declared once, as a TrainConfig field -------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """What values an option accepts (a predicate) and how to say it in an error ("a positive integer")."""

    accepts: typing.Callable
    description: str
    choices: tuple | None = None  # a fixed set of values (argparse shows them)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def one_of(values: tuple) -> Check:
    return Check(lambda v: v in values, f"one of {', '.join(values)}", choices=values)


def widths(value) -> bool:
    return isinstance(value, tuple) and len(value) >= 1 and all(_is_int(n) and n >= 1 for n in value)


POSITIVE_INT = Check(lambda v: _is_int(v) and v >= 1, "a positive integer")
POSITIVE = Check(lambda v: _is_number(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = Check(lambda v: _is_number(v) and v >= 0, "a finite number >= 0")
FRACTION = Check(lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
WIDTHS = Check(widths, "one or more positive layer widths")
SWITCH = Check(lambda v: isinstance(v, bool), "True or False")


def option(help: str, check: Check, *, default=None, flag: str | None = None, cli: bool = True):
    """Declare a TrainConfig option: its help text, its check, and its command-line flag (default: --the-name).

    Which models use it is not declared here: a model uses an option when its constructor takes it as a keyword or
    one of its phases takes its learning rate from it (models.Model.uses); other models refuse it."""
    return field(default=default, metadata=dict(help=help, check=check, flag=flag, cli=cli))


@dataclass
class TrainConfig:
    """Everything that defines a training run; None means "the model's default" (see DEFAULTS).

    An option that some models use and others do not (prior, n_labels, ...) is refused by the models that do not,
    never silently ignored; the rest (epochs, seed, ...) apply to every model.
    """

    model: str = option("the model (a name in MODELS)", Check(lambda v: v in MODELS, "a model name"), default="aae",
                        cli=False)
    recipe: str = option("full (default): the model's recommended settings, what the method reaches; quick: what a "
                         "2-core CPU trains in a few minutes (fewer epochs where the full recipe is long; the same "
                         "for the 2-D models). Options you give override the recipe's", one_of(RECIPES),
                         default="full")
    epochs: int | None = option("epochs in total (default: the model's)", POSITIVE_INT)
    batch_size: int | None = option("images per training step (default: the model's)", POSITIVE_INT)
    latent_dim: int | None = option("size of the code z", POSITIVE_INT)
    hidden: tuple[int, ...] = option("widths of the hidden layers (default: 1000 1000)", WIDTHS,
                                     default=(1000, 1000))
    lr: float | None = option("learning rate of the reconstruction and classification phases", POSITIVE)
    lr_schedule: str | None = option("constant; cosine: every learning rate decays to ~0 over the run's epochs; "
                                     "step: x0.1 after a hundredth and again after a fifth of them (the paper's "
                                     "schedule as recalled, not checked against its text) (default: the model's)",
                                     one_of(LR_SCHEDULES))
    optimizer: str = option("adam (default), or momentum: SGD with momentum 0.9, the paper's kind of optimizer (set "
                            "lr and adversarial_lr for it, e.g. 0.1)", one_of(OPTIMIZERS), default="adam")
    precision: str = option("auto (default): bf16 where the hardware has it natively (CPUs with bf16 units; GPUs of "
                            "compute capability 8.0+ with the CUDA graph), else fp32", one_of(PRECISIONS),
                            default="auto")
    cuda_graph: str = option("replay each training step as a CUDA graph: auto (default: on CUDA devices), on or off",
                             one_of(CUDA_GRAPH_MODES), default="auto")
    seed: int = option("random seed (default 0)", Check(lambda v: _is_int(v) and 0 <= v < 2**63,
                                                         "an integer in [0, 2**63)"), default=0)
    device: str = option("auto (default), cpu, cuda or mps",
                         Check(lambda v: isinstance(v, str) and bool(v), "a device name ('auto', 'cpu', 'cuda', "
                                                                         "'mps')"), default="auto", cli=False)
    validation_size: int = option("training images held out for validation (default 5000)",
                                  Check(lambda v: _is_int(v) and 0 <= v < TRAIN_IMAGES,
                                        f"an integer in [0, {TRAIN_IMAGES})"), default=5000)

    prior: str | None = option("prior on z (default gaussian)", one_of(tuple(PRIORS)))
    prior_std: float | None = option("standard deviation of a Gaussian prior (default 1)", POSITIVE)
    label_aware: bool | None = option("the discriminator also sees the label, D(z, y)", SWITCH)
    n_labels: int | None = option("labeled training images (a multiple of 10)",
                                  Check(lambda v: _is_int(v) and 10 <= v <= TRAIN_IMAGES,
                                        f"an integer in [10, {TRAIN_IMAGES}]"), flag="--labels")
    n_clusters: int | None = option("number of clusters", Check(lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
                                    flag="--clusters")
    input_noise: float | None = option("std of Gaussian noise on the encoder's inputs", NON_NEGATIVE)
    input_dropout: float | None = option("fraction of the encoder's input pixels dropped in training (inverted "
                                         "dropout; before the input noise)", FRACTION)
    hidden_noise: float | None = option("std of Gaussian noise after each of the encoder's hidden layers in "
                                        "training", NON_NEGATIVE)
    balance: float | None = option("weight of the batch balance term", NON_NEGATIVE)
    adversarial_lr: float | None = option("learning rate of the adversarial phases", POSITIVE)
    batch_norm: bool | None = option("batch norm in the encoder's hidden layers (default: the model's)", SWITCH)
    discriminator_hidden: tuple[int, ...] | None = option(
        "widths of the discriminators' hidden layers (default: those of --hidden)", WIDTHS)

    def resolved(self, smoke: bool | None = None) -> "TrainConfig":
        """Refuse unknown models, options the model does not use and out-of-range values; fill in the model's
        defaults. In smoke mode (default: settings.smoke_mode()) the default number of epochs is capped."""
        if self.model not in MODELS:
            raise ConfigError("model", f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        model = MODELS[self.model]
        for name in MODEL_OPTIONS:
            if getattr(self, name) is not None and name not in model.uses():
                raise ConfigError(name, f"{name} is not used by the {self.model} model "
                                        f"(it is used by {', '.join(users_of(name))})")
        filled = {key: value for key, value in defaults_of(model, self.recipe).items() if getattr(self, key) is None}
        if "epochs" in filled and (settings.smoke_mode() if smoke is None else smoke):
            filled["epochs"] = min(filled["epochs"], FAST_EPOCHS)
        config = replace(self, **filled)
        for name, declared in OPTIONS.items():
            value = getattr(config, name)
            if isinstance(value, list) and declared.value_type is tuple:  # --hidden 64 64 arrives as a list
                value = tuple(value)
                setattr(config, name, value)
            if value is not None and not declared.check.accepts(value):
                raise ConfigError(name, f"{name} must be {declared.check.description}, got {value!r}")
        check_combination(config)
        return config


@dataclass(frozen=True)
class Option:
    """One TrainConfig field as declared (see `option`): what the config, its checks and the CLI flags come from."""

    name: str
    type: object
    help: str
    check: Check
    flag: str | None
    cli: bool

    @property
    def value_type(self):
        """int, float, str, bool or tuple: the declared type without its None."""
        return value_type(self.type)


def value_type(declared):
    if typing.get_origin(declared) in (typing.Union, types.UnionType):  # `int | None`
        declared = next(a for a in typing.get_args(declared) if a is not type(None))
    return typing.get_origin(declared) or declared  # tuple[int, ...] -> tuple


OPTIONS = {f.name: Option(name=f.name, type=f.type, **f.metadata) for f in fields(TrainConfig)}
CONFIG_FIELDS = tuple(OPTIONS)
# Options some models use and others refuse: read off the models (their constructors' keywords and phases).
_USED = {kind: set(model.uses()) for kind, model in MODELS.items()}
MODEL_OPTIONS = tuple(name for name in CONFIG_FIELDS
                      if any(name in used for used in _USED.values()) and not all(name in u for u in _USED.values()))


def model_options(model: type[Model]) -> tuple[str, ...]:
    """The options a model uses beyond those every model has (what --help lists for it)."""
    return tuple(name for name in MODEL_OPTIONS if name in model.uses())


def users_of(option_name: str) -> list[str]:
    return [kind for kind, model in MODELS.items() if option_name in model.uses()]


def check_combination(config: TrainConfig) -> None:
    """Options that do not fit together (each alone was checked): the model's constructor says, built on the meta
    device (no memory, no random numbers drawn), and batch norm needs batches of two or more."""
    if config.batch_norm and config.batch_size < 2:
        raise ConfigError("batch_size", "batch_norm needs batches of at least 2 images: raise batch_size")
    try:
        with torch.device("meta"):
            MODELS[config.model].from_config(config)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(None, str(error)) from None


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The learning rates of epoch `epoch` (1-based) of `epochs`, as a fraction of the configured ones.

    "cosine" ends the adversarial game at rest instead of wherever its last swing was: 1 in the first epoch, then
    half a cosine down to 0.5 * (1 + cos(pi * (epochs - 1) / epochs)), about 1 % of the full rate for 15 epochs;
    epochs beyond `epochs` keep that last rate. "step", recalled as the paper's: x0.1 after the first 1 % of the
    epochs (at least one epoch) and x0.1 again after 20 % (at least two)."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":  # cuts recalled as the paper's (epochs 50 and 1000 of 5000; unchecked), as fractions
        return 0.1 ** ((epoch > max(1, round(0.01 * epochs))) + (epoch > max(2, round(0.2 * epochs))))
    return 0.5 * (1 + math.cos(math.pi * (min(epoch, epochs) - 1) / epochs))


# -- where and how a run computes ------------------------------------------------------------------------------
def bf16_native(device: torch.device) -> bool:
    """bf16 in hardware: CUDA compute capability 8.0+ (Ampere on; a T4 is 7.5 and only emulates it, slowly), or a
    CPU whose oneDNN reports bf16 units (AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


@dataclass(frozen=True)
class Placement:
    """Where a run computes and how: its device, bf16 autocast or fp32, and whether steps replay a CUDA graph."""

    device: torch.device
    bf16: bool
    cuda_graph: bool


def placement(config: TrainConfig, device: torch.device | None = None) -> Placement:
    """The device, precision and CUDA-graph policy of a resolved config (`device`: the one to use, if known)."""
    device = device if device is not None else settings.pick_device(config.device)
    if config.precision == "bf16" and not bf16_native(device):
        raise ConfigError("precision", f"bf16 is not supported natively on {device}: use precision='fp32'")
    if config.cuda_graph == "on" and device.type != "cuda":
        raise ConfigError("cuda_graph", f"a CUDA graph needs a CUDA device, not {device}: use cuda_graph='auto' or "
                                        "'off'")
    if config.cuda_graph == "on" and config.optimizer != "adam":
        raise ConfigError("cuda_graph", "the CUDA graph replays Adam's update only: use cuda_graph='auto' or 'off' "
                                        "with optimizer='momentum'")
    graph = config.cuda_graph == "on" or (config.cuda_graph == "auto" and device.type == "cuda"
                                          and config.optimizer == "adam")
    # "auto" uses bf16 on CPUs with bf16 units, where these matmul-bound MLPs run about 3x faster, and on a GPU
    # that replays the step as a CUDA graph (AAE epoch on an H200: 0.13 s vs 0.21 s in fp32). A GPU that launches
    # kernel by kernel is bound by the launches, and autocast's extra casts made it slower.
    bf16 = config.precision == "bf16" or (config.precision == "auto" and bf16_native(device)
                                          and (device.type == "cpu" or graph))
    return Placement(device, bf16, graph)


def machine_recipe(device: torch.device | str | None = None) -> str:
    """The recipe to train on this machine (or on `device`): full on a CUDA GPU (minutes per model), quick elsewhere
    (a CPU, Apple's mps), where the full recipes of the label-learning models take hours."""
    device = device if isinstance(device, torch.device) else settings.pick_device(device)
    return "full" if device.type == "cuda" else "quick"


def build_model(config: TrainConfig, device: torch.device) -> Model:
    """The model of a resolved config, initialised from the run's seed (the caller's random stream is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return MODELS[config.model].from_config(config).to(device)


def training_data(config: TrainConfig, data: MNIST | None, device: torch.device, smoke: bool) -> MNIST:
    """The run's data on its device: `data` if given (checked against the config and for what a model would train on
    wrongly), else MNIST from disk (float pixels in [0, 1] by construction)."""
    if data is None:
        return load_mnist(device=device, validation_size=config.validation_size, smoke=smoke)
    if data.validation_size is not None and data.validation_size != config.validation_size:
        raise ConfigError("validation_size", f"the data holds out {data.validation_size} validation images, the "
                                             f"config asks for validation_size={config.validation_size}")
    check_training_data(data)
    return data.to(device)


class Trainer:
    """Owns a model, its optimizers, the random generator and the history; `fit` runs the shared loop.

    `state` (a checkpoint's contents, see checkpoints.py) restores a saved run; it is checked before any data is
    loaded. Nothing here touches the caller's global random generators.
    """

    def __init__(self, config: TrainConfig, data: MNIST | None = None, state: dict | None = None):
        smoke = settings.smoke_mode()  # asked once per run; everything below reads it from here
        self.config = config.resolved(smoke=smoke)
        self.placement = placement(self.config)
        self.device = self.placement.device
        self.model = build_model(self.config, self.device)
        phases = self.model.phases()
        self.base_lrs = {name: getattr(self.config, phase.lr) for name, phase in phases.items()}
        make = self.adam if self.config.optimizer == "adam" else self.momentum_sgd
        self.optimizers = {name: make([getattr(self.model, part) for part in phase.modules], self.base_lrs[name])
                           for name, phase in phases.items()}
        self.generator = torch.Generator(self.device).manual_seed(self.config.seed)
        self.graphed_step = None  # made at the first fit, after any checkpoint is loaded
        self.history: list[dict] = []
        self.smoke = smoke  # trained (partly) in smoke mode, or on its data: its numbers are not real results
        self.pretrained: dict | None = None  # the manifest, for a model loaded from a pretrained folder
        if state is not None:
            self.load_state_dict(state)
            self.smoke = self.smoke or smoke
        self.data = training_data(self.config, data, self.device, smoke)
        self.model.prepare(self.data, seed=self.config.seed)

    @property
    def use_bf16(self) -> bool:
        return self.placement.bf16

    @property
    def use_cuda_graph(self) -> bool:
        return self.placement.cuda_graph

    def adam(self, modules, lr) -> torch.optim.Optimizer:
        params = [p for module in modules for p in module.parameters()]
        # The fused kernel updates all tensors at once; it exists for CPU and CUDA. A CUDA graph replays the update
        # as recorded, so its step count and learning rate must be GPU tensors that change in place (capturable).
        if self.use_cuda_graph:
            return torch.optim.Adam(params, lr=torch.tensor(lr, device=self.device), fused=True, capturable=True)
        return torch.optim.Adam(params, lr=lr, fused=self.device.type in {"cpu", "cuda"})

    def momentum_sgd(self, modules, lr) -> torch.optim.Optimizer:
        """SGD with momentum, the paper's kind of optimizer (not replayed by a CUDA graph: the placement turns it
        off)."""
        return torch.optim.SGD([p for module in modules for p in module.parameters()], lr=lr, momentum=MOMENTUM)

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
                if len(x) < 2 and self.config.batch_norm:
                    continue  # a last batch of one image has no batch statistics: it waits for the next epoch
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

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "optimizers": {name: portable(opt.state_dict()) for name, opt in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
            "history": self.history,
            "smoke": self.smoke,
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
