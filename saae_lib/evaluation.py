"""A trained model's numbers on the official test set: the only place the test set is used.

Each model lists its `measures` (models.py); `test_metrics` computes those, so the CLI, the chapters and the
benchmarks report the same numbers in the same way. `validation_metrics` takes the same numbers on the validation
split, for tuning.
"""

from dataclasses import dataclass

import numpy as np
import torch

from . import metrics, settings
from .digit_classifier import load_judge
from .training import Trainer


def cluster_mapping(trainer: Trainer) -> torch.Tensor:
    """Each cluster's majority digit among the training images (labels used after training, for scoring only)."""
    clusters = metrics.predict(trainer.model, trainer.data.train_images)
    return metrics.cluster_labels(clusters, trainer.data.train_labels, trainer.model.n_classes)


def test_predictions(trainer: Trainer) -> np.ndarray:
    """The predicted digit of every test image (int64); a clustering model's clusters are named by cluster_mapping."""
    predicted = metrics.predict(trainer.model, trainer.data.test_images).cpu()
    if "clustering" in trainer.model.measures:
        predicted = cluster_mapping(trainer)[predicted]
    return predicted.numpy().astype(np.int64)


def test_codes(trainer: Trainer) -> tuple[np.ndarray, np.ndarray]:
    """Codes (float32, n x latent_dim; the style code z for semi and cluster) and labels (int64) of the test set."""
    codes = metrics.encode(trainer.model, trainer.data.test_images).cpu().numpy().astype(np.float32)
    return codes, trainer.data.test_labels.cpu().numpy().astype(np.int64)


def is_smoke(trainer: Trainer) -> bool:
    """Numbers of a model trained in smoke mode, or measured on smoke mode's tiny test set, are not real (the trainer
    says so: it was made in smoke mode, or restored from a run that was)."""
    return trainer.smoke


@dataclass
class Split:
    """The images a measurement is taken on; is_test: the official test set (else the validation split)."""

    images: torch.Tensor
    labels: torch.Tensor
    is_test: bool
    judged_per_label: int = 1000  # generated digits per label read by the judge


def component_match(trainer: Trainer, split: Split) -> dict:
    """Label-aware models with a prior of one component per digit: codes in their own digit's component."""
    model = trainer.model
    if not (model.label_aware and hasattr(model.code_prior(), "component_log_density")):
        return {}
    return {"component_accuracy": metrics.component_accuracy(model, split.images, split.labels)}


def clustering(trainer: Trainer, split: Split) -> dict:
    """Clustering error with clusters named two ways: by their majority digit among the training images (ours), and
    (on the test set) by the digit of the validation image most confidently put in them (the paper's)."""
    data = trainer.data
    clusters = metrics.predict(trainer.model, split.images)
    result = {"n_clusters": trainer.config.n_clusters,
              "test_clustering_error": metrics.clustering_error(clusters, split.labels, cluster_mapping(trainer))}
    if split.is_test and len(data.val_images):
        named = metrics.cluster_labels_by_top_image(metrics.label_probabilities(trainer.model, data.val_images),
                                                    data.val_labels)
        result["test_clustering_error_top_image"] = metrics.clustering_error(clusters, split.labels, named)
    return result


def generated_digits(trainer: Trainer, split: Split) -> dict:
    judge, ceiling = load_judge(trainer.device, progress=False)
    accuracy = metrics.generated_label_accuracy(trainer.model, judge, n_per_label=split.judged_per_label)
    return {"generated_label_accuracy": accuracy, "judge_real_test_accuracy": ceiling}


MEASURES = {  # measure named in a model's `measures` -> its numbers, named as on the test set
    "reconstruction": lambda t, s: {"test_reconstruction_mse": metrics.reconstruction_error(t.model, s.images,
                                                                                            s.labels)},
    "prior_match": lambda t, s: {"prior_match_mmd": metrics.prior_match(t.model, s.images)},
    "component_match": component_match,
    "generated_digits": generated_digits,
    "classification": lambda t, s: {"n_labels": t.config.n_labels, "test_error": metrics.classification_error(
        metrics.predict(t.model, s.images), s.labels)},
    "clustering": clustering,
}
SPLIT_FREE = {"generated_label_accuracy", "judge_real_test_accuracy", "n_labels", "n_clusters"}


def measure(trainer: Trainer, split: Split, judge: bool = True, only: tuple[str, ...] | None = None) -> dict:
    """The model's measures on `split` (or those of them named in `only`); off the test set, "test_x" is named
    "val_x" and "x" "val_x"."""
    result = {}
    for name in trainer.model.measures:
        if (only is None or name in only) and (judge or name != "generated_digits"):
            result.update(MEASURES[name](trainer, split))
    if split.is_test:
        return result
    return {key if key in SPLIT_FREE else "val_" + key.removeprefix("test_"): value for key, value in result.items()}


def validation_metrics(trainer: Trainer, judged_per_label: int = 1000, only: tuple[str, ...] | None = None) -> dict:
    """The same numbers on the validation split, for tuning (the test set stays untouched)."""
    data = trainer.data
    split = Split(data.val_images, data.val_labels, is_test=False, judged_per_label=judged_per_label)
    return measure(trainer, split, only=only)


def test_metrics(trainer: Trainer, judge: bool = True) -> dict:
    """The model's numbers on the test set, as one flat dict (judge=False skips the judge of generated digits)."""
    history, data = trainer.history, trainer.data
    result = {
        "model": trainer.config.model,
        "epochs": len(history),
        "seconds_per_epoch": float(np.median([h["seconds"] for h in history])) if history else None,
        **measure(trainer, Split(data.test_images, data.test_labels, is_test=True), judge),
    }
    if is_smoke(trainer):
        result["smoke"] = settings.SMOKE_NOTE
    return result
