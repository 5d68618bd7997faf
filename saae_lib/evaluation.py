"""A trained model's numbers on the official test set: the only place the test set is used.

Each model lists its `measures` (models.py); `test_metrics` computes those, so the CLI, the chapters and the
benchmarks report the same numbers in the same way.
"""

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
    """Numbers of a model trained in smoke mode, or measured on smoke mode's tiny test set, are not real."""
    return trainer.smoke or settings.FAST


def component_match(trainer: Trainer) -> dict:
    """Label-aware models with a prior of one component per digit: test codes in their own digit's component."""
    model = trainer.model
    if not (model.label_aware and hasattr(model.code_prior(), "component_log_density")):
        return {}
    return {"component_accuracy": metrics.component_accuracy(model, trainer.data.test_images,
                                                             trainer.data.test_labels)}


def clustering(trainer: Trainer) -> dict:
    """Clustering error with clusters named two ways: by their majority digit among the training images (ours), and
    by the digit of the validation image most confidently put in them (the paper's)."""
    data = trainer.data
    clusters = metrics.predict(trainer.model, data.test_images)
    result = {"n_clusters": trainer.config.n_clusters,
              "test_clustering_error": metrics.clustering_error(clusters, data.test_labels, cluster_mapping(trainer))}
    if len(data.val_images):
        named = metrics.cluster_labels_by_top_image(metrics.label_probabilities(trainer.model, data.val_images),
                                                    data.val_labels)
        result["test_clustering_error_top_image"] = metrics.clustering_error(clusters, data.test_labels, named)
    return result


def generated_digits(trainer: Trainer) -> dict:
    judge, ceiling = load_judge(trainer.device, progress=False)
    return {"generated_label_accuracy": metrics.generated_label_accuracy(trainer.model, judge),
            "judge_real_test_accuracy": ceiling}


MEASURES = {  # measure named in a model's `measures` -> its test-set numbers
    "reconstruction": lambda t: {"test_reconstruction_mse": metrics.reconstruction_error(
        t.model, t.data.test_images, t.data.test_labels)},
    "prior_match": lambda t: {"prior_match_mmd": metrics.prior_match(t.model, t.data.test_images)},
    "component_match": component_match,
    "generated_digits": generated_digits,
    "classification": lambda t: {"n_labels": t.config.n_labels, "test_error": metrics.classification_error(
        metrics.predict(t.model, t.data.test_images), t.data.test_labels)},
    "clustering": clustering,
}


def test_metrics(trainer: Trainer, judge: bool = True) -> dict:
    """The model's numbers on the test set, as one flat dict (judge=False skips the judge of generated digits)."""
    history = trainer.history
    result = {
        "model": trainer.config.model,
        "epochs": len(history),
        "seconds_per_epoch": float(np.median([h["seconds"] for h in history])) if history else None,
    }
    for measure in trainer.model.measures:
        if judge or measure != "generated_digits":
            result.update(MEASURES[measure](trainer))
    if is_smoke(trainer):
        result["smoke"] = settings.SMOKE_NOTE
    return result
