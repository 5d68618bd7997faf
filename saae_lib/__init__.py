"""saae_lib: autoencoders, adversarial autoencoders and their supervised and semi-supervised variants on MNIST."""

__version__ = "0.2.0"

from .checkpoints import load_checkpoint, save_checkpoint, train_or_load
from .data import MNIST, batches, labeled_subset, load_mnist
from .models import (
    MODELS,
    AdversarialAutoencoder,
    Autoencoder,
    ClusteringAAE,
    SemiSupervisedAAE,
    SupervisedAAE,
    SupervisedClassifier,
)
from .priors import CategoricalPrior, GaussianPrior, MixtureOfGaussiansPrior, SwissRollPrior, make_prior
from .settings import pick_device, seed_everything, smoke_mode, smoke_note
from .training import DEFAULTS, TrainConfig, Trainer, defaults_of, machine_recipe, train

__all__ = [
    "load_checkpoint", "save_checkpoint", "train_or_load",
    "MNIST", "batches", "labeled_subset", "load_mnist",
    "MODELS", "AdversarialAutoencoder", "Autoencoder", "ClusteringAAE", "SemiSupervisedAAE", "SupervisedAAE",
    "SupervisedClassifier",
    "CategoricalPrior", "GaussianPrior", "MixtureOfGaussiansPrior", "SwissRollPrior", "make_prior",
    "pick_device", "seed_everything", "smoke_mode", "smoke_note",
    "DEFAULTS", "TrainConfig", "Trainer", "defaults_of", "machine_recipe", "train",
]
