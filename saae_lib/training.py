"""One training loop for every model; each model only brings its phases (its `step`).

A step gets one batch and runs the model's phases in order, each phase one optimizer update:
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
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

with warnings.catch_warnings():  # without ipywidgets, tqdm.auto falls back to text bars: fine, no need to warn
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

from . import settings
from .data import MNIST, N_CLASSES, batches, labeled_subset, load_mnist
from .models import AdversarialAutoencoder, Autoencoder, SemiSupervisedAAE, SupervisedClassifier
from .priors import make_prior

MODELS = ("ae", "aae", "saae", "semi", "cluster", "supervised")

# Recommended full-quality settings per model: the chapters, the CLI and the benchmarks all start from these.
# Batches of 500 (not the paper's 100) keep a 2-core CPU near its peak; the learning rates are doubled to match.
# All three phases share one learning rate, as in the reference implementation. A weaker adversary (2e-4) loses the
# game as training goes on (measured, Gaussian prior: MMD to the prior 0.061 after 3 epochs, 0.109 after 15, codes of
# the 1s far outside the prior), while 2e-3 gives MMD 0.006 after 3 epochs for +0.004 validation MSE.
_ADVERSARIAL = dict(batch_size=500, lr=2e-3, adversarial_lr=2e-3)
DEFAULTS = {
    "ae": dict(epochs=15, latent_dim=2, batch_size=500, lr=2e-3),
    "aae": dict(epochs=15, latent_dim=2, **_ADVERSARIAL),
    # label_aware=True (a class-conditional discriminator) is not the default, to keep the paper's model. It closed
    # the gap to the judge's ceiling on an H200 (seed 0: generated digits read correctly 96.2 % -> 99.97 %), but the
    # same seed on a CPU stopped in a swing of the game (last epoch: all codes shifted, 88.7 %).
    "saae": dict(epochs=15, latent_dim=2, **_ADVERSARIAL),
    # The categorical discriminator needs a stronger generator phase than the 2-D AAEs (measured: validation error
    # after 4 epochs, 100 labels, 13.3 % with adversarial_lr 2e-4 and 11.5 % with 1e-3).
    "semi": dict(epochs=20, latent_dim=10, n_labels=100, input_noise=0.3, balance=0.0,
                 **_ADVERSARIAL | {"adversarial_lr": 1e-3}),
    # Without the batch balance term the clustering collapses onto a few categories (measured on validation images
    # after 30 epochs on a GPU: balance 0 uses 3 of 16 clusters, error 71.8 %; balance 3: 16 clusters, 34.0 %;
    # balance 10: 16 clusters, 28.9 %).
    "cluster": dict(epochs=20, latent_dim=5, n_clusters=16, input_noise=0.3, balance=10.0,
                    **_ADVERSARIAL | {"adversarial_lr": 1e-3}),
    "supervised": dict(epochs=20, latent_dim=10, n_labels=100, input_noise=0.3, batch_size=500, lr=2e-3),
}
FAST_EPOCHS = 2


@dataclass
class TrainConfig:
    """Everything that defines a training run; None means "the model's default" (see DEFAULTS)."""

    model: str = "aae"
    epochs: int | None = None
    batch_size: int | None = None
    latent_dim: int | None = None
    hidden: tuple[int, ...] = (1000, 1000)
    prior: str = "gaussian"
    prior_std: float = 1.0
    label_aware: bool = False  # aae/saae: the discriminator sees the label, matching q(z|y) to p(z|y) per class
    n_labels: int | None = None  # semi: size of the class-balanced labeled subset
    n_clusters: int | None = None  # cluster: number of categories
    input_noise: float | None = None  # semi/cluster: std of Gaussian noise added to encoder inputs
    balance: float | None = None  # semi/cluster: weight of the batch balance term (see balance_penalty)
    lr: float | None = None  # reconstruction phase (and cross-entropy phase)
    adversarial_lr: float | None = None  # discriminator and generator phases
    precision: str = "auto"  # "auto" (bf16 on CPUs that have it, else fp32), "bf16" or "fp32"
    seed: int = 0
    device: str = "auto"
    validation_size: int = 5000

    def resolved(self) -> "TrainConfig":
        """Fill in the model's defaults and validate; smoke mode caps the epochs."""
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        filled = {key: value for key, value in DEFAULTS[self.model].items() if getattr(self, key) is None}
        config = replace(self, **filled, hidden=tuple(self.hidden))
        if settings.FAST and self.epochs is None:
            config = replace(config, epochs=min(config.epochs, FAST_EPOCHS))
        for name in ("epochs", "batch_size", "latent_dim"):
            if getattr(config, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(config, name)}")
        if config.precision not in {"auto", "bf16", "fp32"}:
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {config.precision!r}")
        if config.model in {"aae", "saae"}:
            make_prior(config.prior, config.latent_dim, config.prior_std)  # fails early with a clear message
        if config.balance is not None and (config.model not in {"semi", "cluster"} or config.balance < 0):
            raise ValueError(f"balance weighs the category balance of the semi and cluster models and must be >= 0; "
                             f"got balance={config.balance} for {config.model!r}")
        if config.label_aware and config.model not in {"aae", "saae"}:
            raise ValueError(f"label_aware gives the discriminator of aae/saae the label; {config.model!r} has none")
        if config.model in {"semi", "supervised"} and config.n_labels % N_CLASSES:
            raise ValueError(f"n_labels must be a multiple of {N_CLASSES} (a class-balanced subset), "
                             f"got {config.n_labels}")
        return config


def build_model(config: TrainConfig) -> torch.nn.Module:
    if config.model == "ae":
        return Autoencoder(config.latent_dim, config.hidden)
    if config.model in {"aae", "saae"}:
        prior = make_prior(config.prior, config.latent_dim, config.prior_std)
        return AdversarialAutoencoder(config.latent_dim, config.hidden, prior, supervised=config.model == "saae",
                                      label_aware=config.label_aware)
    if config.model == "supervised":
        return SupervisedClassifier(config.latent_dim, config.hidden)
    n_classes = N_CLASSES if config.model == "semi" else config.n_clusters
    return SemiSupervisedAAE(config.latent_dim, config.hidden, n_classes, config.prior_std)


def make_optimizers(model, config: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """One Adam per phase, each over the parameters that phase updates."""

    def adam(modules, lr):
        params = [p for module in modules for p in module.parameters()]
        # The fused kernel updates all tensors at once; it exists for CPU and CUDA.
        fused = next(model.parameters()).device.type in {"cpu", "cuda"}
        return torch.optim.Adam(params, lr=lr, fused=fused)

    if config.model == "supervised":
        return {"classification": adam([model.encoder], config.lr)}
    optimizers = {"reconstruction": adam([model.encoder, model.decoder], config.lr)}
    if config.model in {"aae", "saae"}:
        optimizers["discriminator"] = adam([model.discriminator], config.adversarial_lr)
        optimizers["generator"] = adam([model.encoder], config.adversarial_lr)
    elif config.model in {"semi", "cluster"}:
        optimizers["discriminator"] = adam([model.style_discriminator, model.label_discriminator],
                                           config.adversarial_lr)
        optimizers["generator"] = adam([model.encoder], config.adversarial_lr)
        if config.model == "semi":
            optimizers["classification"] = adam([model.encoder], config.lr)
    return optimizers


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


class Trainer:
    """Owns a model, its optimizers, the random generator and the history; `fit` runs the shared loop."""

    def __init__(self, config: TrainConfig, data: MNIST | None = None):
        self.config = config.resolved()
        self.device = settings.pick_device(self.config.device)
        settings.seed_everything(self.config.seed)  # model initialisation draws from torch's global generator
        self.model = build_model(self.config).to(self.device)
        self.optimizers = make_optimizers(self.model, self.config)
        self.generator = torch.Generator(self.device).manual_seed(self.config.seed)
        self.data = data.to(self.device) if data is not None else load_mnist(device=self.device)
        self.history: list[dict] = []
        # "auto" uses bf16 only on CPUs with bf16 units, where these matmul-bound MLPs run about 3x faster. On a GPU
        # the epoch is bound by kernel launches, not arithmetic, and autocast's casts made it slower (H200, AAE:
        # 1.04 s per epoch in bf16 vs 0.77 s in fp32), so "auto" keeps fp32 there.
        self.use_bf16 = self.config.precision == "bf16" or (
            self.config.precision == "auto" and self.device.type == "cpu" and bf16_supported(self.device))
        if self.config.precision == "bf16" and not bf16_supported(self.device):
            raise ValueError(f"bf16 is not supported on {self.device}: use precision='fp32'")
        self.step = STEPS[self.config.model]
        self.labeled = None
        if self.config.model in {"semi", "supervised"}:
            index = labeled_subset(self.data.train_labels, self.config.n_labels, seed=self.config.seed)
            index = index.to(self.device)
            self.labeled = (self.data.train_images[index], self.data.train_labels[index])

    # -- the shared loop ------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None, callback=None, progress: bool | None = None) -> list[dict]:
        """Train until `epochs` epochs are done in total (default: the config's); returns the history.

        progress: show a tqdm bar (default: on, unless SAAE_PROGRESS=0)."""
        total = self.config.epochs if epochs is None else epochs
        progress = settings.show_progress(progress)
        bar = tqdm(range(len(self.history) + 1, total + 1), desc=f"{self.config.model} epochs",
                   disable=not progress, leave=True)
        for epoch in bar:
            start = time.perf_counter()
            self.model.train()
            sums, n_batches = defaultdict(float), 0
            for x, y in batches(self.data.train_images, self.data.train_labels, batch_size=self.config.batch_size,
                                generator=self.generator):
                for name, loss in self.step(self, x, y).items():
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
        from .metrics import classification_error, reconstruction_error

        self.model.eval()
        images, labels = self.data.val_images, self.data.val_labels
        if len(images) == 0:
            return {}
        result = {}
        if self.config.model != "supervised":
            result["val_reconstruction"] = reconstruction_error(self.model, images, labels)
        if self.config.model in {"semi", "supervised"}:
            result["val_error"] = classification_error(predict(self.model, images), labels)
        return result

    # -- helpers the steps share -----------------------------------------------------------------------
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

    # -- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
            "history": self.history,
            "smoke": settings.FAST,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        if state["generator_device"] == self.device.type:
            self.generator.set_state(state["generator"])
        else:
            warnings.warn(f"the random stream was saved on {state['generator_device']}, this run is on "
                          f"{self.device.type}: further training draws a fresh stream, unlike an uninterrupted run",
                          stacklevel=2)
        self.history = list(state["history"])


@contextmanager
def frozen(*modules):
    """Skip weight gradients of modules that a phase must not update (the generator phase's discriminator)."""
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def bce(logits, target: float):
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target, dtype=torch.float32))


def reconstruction_loss(logits, x):
    return F.binary_cross_entropy_with_logits(logits.float(), x)


@torch.no_grad()
def predict(model, images, batch_size=2000):
    """Predicted class (semi) or cluster (cluster) of each image."""
    return torch.cat([model.classify(chunk) for chunk in images.split(batch_size)])


# -- the phases of each model ------------------------------------------------------------------------------
def autoencoder_step(trainer: Trainer, x, y):
    model = trainer.model
    with trainer.autocast():
        loss = reconstruction_loss(model.decoder(model.encoder(x)), x)
    return {"reconstruction": trainer.update("reconstruction", loss)}


def adversarial_step(trainer: Trainer, x, y):
    model = trainer.model
    conditioning = F.one_hot(y, N_CLASSES).float() if model.kind == "saae" else None
    discriminator_labels = y if model.label_aware else None
    prior_labels = discriminator_labels if model.prior.n_classes else None  # a Gaussian is the same for every class

    # 1. Reconstruction: encoder and decoder.
    with trainer.autocast():
        reconstruction = reconstruction_loss(model.decoder(model.encoder(x), conditioning), x)
    trainer.update("reconstruction", reconstruction)

    # 2. Discriminator: samples of the prior are "real", the encoder's codes are "fake".
    real = trainer.sample_prior(model.prior, len(x), prior_labels)
    with trainer.autocast():
        with torch.no_grad():
            fake = model.encoder(x)
        discriminator = bce(model.discriminate(real, discriminator_labels), 1.0) + bce(
            model.discriminate(fake, discriminator_labels), 0.0)
    trainer.update("discriminator", discriminator)

    # 3. Generator: the encoder learns to make codes the discriminator calls real.
    with trainer.autocast(), frozen(model.discriminator):
        generator = bce(model.discriminate(model.encoder(x), discriminator_labels), 1.0)
    trainer.update("generator", generator)
    return {"reconstruction": reconstruction, "discriminator": discriminator, "generator": generator}


def semi_supervised_step(trainer: Trainer, x, y):
    model = trainer.model
    # 1. Reconstruction through [softmax(y), z].
    with trainer.autocast():
        logits, z = model.encoder(trainer.noisy(x))
        reconstruction = reconstruction_loss(model.decoder(z, logits.softmax(1)), x)
    trainer.update("reconstruction", reconstruction)

    # 2. Both discriminators: one-hot samples vs softmax outputs, Gaussian samples vs style codes.
    real_y = trainer.sample_prior(model.label_prior, len(x))
    real_z = trainer.sample_prior(model.prior, len(x))
    with trainer.autocast():
        with torch.no_grad():
            logits, z = model.encoder(trainer.noisy(x))
        discriminator = (bce(model.label_discriminator(real_y), 1.0)
                         + bce(model.label_discriminator(logits.softmax(1)), 0.0)
                         + bce(model.style_discriminator(real_z), 1.0) + bce(model.style_discriminator(z), 0.0))
    trainer.update("discriminator", discriminator)

    # 3. Generator: the encoder fools both.
    with trainer.autocast(), frozen(model.label_discriminator, model.style_discriminator):
        logits, z = model.encoder(trainer.noisy(x))
        probabilities = logits.softmax(1)
        generator = bce(model.label_discriminator(probabilities), 1.0) + bce(model.style_discriminator(z), 1.0)
        imbalance = balance_penalty(probabilities)
    trainer.update("generator", generator + trainer.config.balance * imbalance if trainer.config.balance else generator)
    losses = {"reconstruction": reconstruction, "discriminator": discriminator, "generator": generator,
              "imbalance": imbalance}

    # 4. Semi-supervised: cross-entropy on a batch drawn from the small labeled subset.
    if trainer.labeled is not None:
        losses.update(supervised_step(trainer, x, y))
    return losses


def balance_penalty(probabilities):
    """log K - H(mean of the batch's category probabilities): 0 when the batch uses all K categories equally.

    The categorical discriminator judges one code at a time, so codes that are all confidently one-hot pass it
    even when they use only a few categories; this batch-level term (CatGAN's marginal entropy) sees that.
    """
    mean = probabilities.float().mean(dim=0)
    return math.log(len(mean)) + (mean * mean.clamp_min(1e-12).log()).sum()


def supervised_step(trainer: Trainer, x, y):
    """Cross-entropy on a batch of the labeled subset (the unlabeled batch x, y is not used)."""
    images, labels = trainer.labeled
    pick = torch.randint(len(images), (min(len(x), len(images)),), generator=trainer.generator, device=images.device)
    with trainer.autocast():
        classification = F.cross_entropy(trainer.model.encoder(trainer.noisy(images[pick]))[0].float(), labels[pick])
    return {"classification": trainer.update("classification", classification)}


STEPS = {"ae": autoencoder_step, "aae": adversarial_step, "saae": adversarial_step,
         "semi": semi_supervised_step, "cluster": semi_supervised_step, "supervised": supervised_step}


def train(model: str = "aae", data: MNIST | None = None, callback=None, progress=None, **options) -> Trainer:
    """Build and train a model in one call: `trainer = train("aae", epochs=10, prior="mixture")`."""
    trainer = Trainer(TrainConfig(model=model, **options), data)
    trainer.fit(callback=callback, progress=progress)
    return trainer
