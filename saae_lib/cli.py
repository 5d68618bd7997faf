"""Command line: python -m saae_lib {train,evaluate,sample,predict} ... (see --help of each)."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from . import settings
from .checkpoints import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .data import N_CLASSES, DataError
from .priors import PRIORS
from .training import DEFAULTS, MODELS, TrainConfig, Trainer, predict


def evaluate_trainer(trainer: Trainer, judge: bool = True) -> dict:
    """The model's numbers on the official test set (the only place the test set is used)."""
    from . import metrics

    model, data, config = trainer.model, trainer.data, trainer.config
    result = {
        "model": config.model,
        "epochs": len(trainer.history),
        "seconds_per_epoch": float(np.median([h["seconds"] for h in trainer.history])) if trainer.history else None,
    }
    if config.model != "supervised":
        result["test_reconstruction_mse"] = metrics.reconstruction_error(model, data.test_images, data.test_labels)
    if config.model in {"ae", "aae", "saae"}:
        result["prior_match_mmd"] = metrics.prior_match(model, data.test_images)
    if config.model == "saae" and judge:
        from .digit_classifier import load_judge

        classifier, ceiling = load_judge(trainer.device, progress=False)
        result["generated_label_accuracy"] = metrics.generated_label_accuracy(model, classifier)
        result["judge_real_test_accuracy"] = ceiling
    if config.model in {"semi", "supervised"}:
        result["n_labels"] = config.n_labels
        result["test_error"] = metrics.classification_error(predict(model, data.test_images), data.test_labels)
    if config.model == "cluster":
        result["n_clusters"] = config.n_clusters
        mapping = cluster_mapping(trainer)
        result["test_clustering_error"] = metrics.clustering_error(
            predict(model, data.test_images), data.test_labels, mapping)
    if settings.FAST:
        result["smoke"] = settings.smoke_note()
    return result


def cluster_mapping(trainer: Trainer) -> torch.Tensor:
    """Each cluster's majority digit among the training images (labels used after training, for scoring)."""
    from .metrics import cluster_labels

    clusters = predict(trainer.model, trainer.data.train_images)
    return cluster_labels(clusters, trainer.data.train_labels, trainer.config.n_clusters)


def test_predictions(trainer: Trainer) -> np.ndarray:
    predicted = predict(trainer.model, trainer.data.test_images)
    if trainer.config.model == "cluster":
        predicted = cluster_mapping(trainer)[predicted.cpu()]
    return predicted.cpu().numpy().astype(np.int64)


def refuse_overwrite(path: Path, force: bool, parser) -> None:
    if path.exists() and not force:
        parser.error(f"{path} exists; pass --force to overwrite it")


# -- commands ---------------------------------------------------------------------------------------------------
def command_train(args, parser) -> int:
    out = Path(args.out)
    checkpoint = out / CHECKPOINT_NAME
    if args.resume:
        if not checkpoint.is_file():
            parser.error(f"--resume: no checkpoint at {checkpoint}")
        trainer = load_checkpoint(out, device=args.device)
        if args.epochs is not None and args.epochs <= len(trainer.history):
            parser.error(f"--resume: the checkpoint already has {len(trainer.history)} epochs; ask for more")
    else:
        refuse_overwrite(checkpoint, args.force, parser)
        options = dict(model=args.model, epochs=args.epochs, latent_dim=args.latent_dim, n_labels=args.labels,
                       n_clusters=args.clusters, seed=args.seed, device=args.device or "auto",
                       precision=args.precision)
        if args.prior is not None:
            options["prior"] = args.prior
        if args.batch_size is not None:
            options["batch_size"] = args.batch_size
        if args.label_aware:
            options["label_aware"] = True
        if args.balance is not None:
            options["balance"] = args.balance
        try:
            trainer = Trainer(TrainConfig(**options))
        except ValueError as error:  # e.g. --labels not a multiple of 10, bf16 where it is not supported
            parser.error(str(error))
    note = settings.smoke_note()
    if note:
        print(note)
    print(f"training {trainer.config.model} on {trainer.device} "
          f"({'bf16' if trainer.use_bf16 else 'fp32'}), {len(trainer.data.train_images)} images", flush=True)

    def report(trainer, record):
        losses = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in {"epoch", "seconds"})
        print(f"epoch {record['epoch']}/{trainer.config.epochs if args.epochs is None else args.epochs}: "
              f"{record['seconds']:.1f} s  {losses}", flush=True)
        save_checkpoint(trainer, checkpoint)  # every epoch, so an interrupted run can --resume

    trainer.fit(epochs=args.epochs, callback=report, progress=False)
    metrics = evaluate_trainer(trainer)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))
    return 0


def command_evaluate(args, parser) -> int:
    trainer = open_run(args, parser)
    print(json.dumps(evaluate_trainer(trainer)))
    return 0


def command_sample(args, parser) -> int:
    if args.n < 1:
        parser.error("--n must be at least 1")
    out = Path(args.out)
    if out.suffix != ".npz":
        parser.error(f"--out must end in .npz, got {out}")
    refuse_overwrite(out, args.force, parser)
    trainer = open_run(args, parser)
    model, kind = trainer.model, trainer.config.model
    if not hasattr(model, "decode"):
        parser.error(f"sample needs a model with a decoder (ae, aae, saae, semi, cluster), this one is {kind}")
    if args.label is not None:
        n_classes = getattr(model, "n_classes", N_CLASSES)
        if kind not in {"saae", "semi", "cluster"}:
            parser.error(f"--label needs a label-conditioned model (saae, semi or cluster), this one is {kind}")
        if not 0 <= args.label < n_classes:
            parser.error(f"--label must be in 0..{n_classes - 1}")
    generator = torch.Generator().manual_seed(args.seed)
    from .priors import GaussianPrior

    prior = getattr(model, "prior", None) or GaussianPrior(trainer.config.latent_dim)  # the AE has no prior
    z = prior.sample(args.n, generator=generator).to(trainer.device)
    labels = None
    if kind in {"saae", "semi", "cluster"}:
        n_classes = N_CLASSES if kind == "saae" else model.n_classes
        labels = (torch.full((args.n,), args.label) if args.label is not None
                  else torch.randint(n_classes, (args.n,), generator=generator)).to(trainer.device)
    with torch.no_grad():
        model.eval()
        decode_labels = labels
        if kind in {"semi", "cluster"}:
            decode_labels = torch.nn.functional.one_hot(labels, model.n_classes).float()
        images = model.decode(z, decode_labels) if labels is not None else model.decode(z)
    images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, 28, 28).cpu().numpy()
    arrays = {"images": images}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    if settings.FAST:
        arrays["smoke"] = np.array(settings.smoke_note())
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {len(images)} images to {out}")
    return 0


def command_predict(args, parser) -> int:
    out = Path(args.out)
    if out.suffix != ".npy":
        parser.error(f"--out must end in .npy, got {out}")
    refuse_overwrite(out, args.force, parser)
    trainer = open_run(args, parser)
    if trainer.config.model not in {"semi", "cluster", "supervised"}:
        parser.error(f"predict needs a semi, cluster or supervised model, this one is {trainer.config.model}")
    predicted = test_predictions(trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, predicted)
    print(f"wrote {len(predicted)} predictions to {out}")
    return 0


def open_run(args, parser) -> Trainer:
    if not (Path(args.dir) / CHECKPOINT_NAME).is_file():
        parser.error(f"no {CHECKPOINT_NAME} in {args.dir}: train a model there first (python -m saae_lib train)")
    return load_checkpoint(args.dir, device=args.device)


# -- argument parsing ------------------------------------------------------------------------------------------
def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m saae_lib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = "; ".join(f"{m}: {', '.join(f'{k}={v}' for k, v in d.items())}" for m, d in DEFAULTS.items())

    train = commands.add_parser("train", help="train a model, write DIR/checkpoint.pt and DIR/metrics.json",
                                description=f"Train a model on MNIST. Defaults per model: {defaults}.")
    train.add_argument("model", choices=MODELS)
    train.add_argument("--out", required=True, help="output folder")
    train.add_argument("--epochs", type=positive_int, help="epochs in total (default: the model's)")
    train.add_argument("--latent-dim", type=positive_int, help="size of the code z")
    train.add_argument("--labels", type=positive_int, help="semi: labeled training images (multiple of 10)")
    train.add_argument("--clusters", type=positive_int, help="cluster: number of clusters")
    train.add_argument("--prior", choices=sorted(PRIORS), help="aae/saae: prior on z (default gaussian)")
    train.add_argument("--label-aware", action="store_true",
                       help="aae/saae: the discriminator also sees the label, D(z, y): q(z|y) matched per class")
    train.add_argument("--balance", type=float, help="semi/cluster: weight of the batch balance term")
    train.add_argument("--batch-size", type=positive_int)
    train.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", help="auto (default), cpu, cuda or mps")
    train.add_argument("--resume", action="store_true", help="continue the run in --out up to --epochs")
    train.add_argument("--force", action="store_true", help="overwrite an existing run in --out")

    evaluate = commands.add_parser("evaluate", help="print a trained model's test metrics as JSON")
    sample = commands.add_parser("sample", help="decode N prior samples into images (.npz)")
    predict_cmd = commands.add_parser("predict", help="predicted digit of each test image (.npy), semi/cluster")
    for sub in (evaluate, sample, predict_cmd):
        sub.add_argument("dir", help="folder with checkpoint.pt")
        sub.add_argument("--device", help="auto (default), cpu, cuda or mps")
    sample.add_argument("--n", type=int, required=True, help="number of images")
    sample.add_argument("--out", required=True, help="output .npz (arrays: images uint8 N x 28 x 28, labels)")
    sample.add_argument("--label", type=int, help="saae/semi/cluster: make every image this digit/category")
    sample.add_argument("--seed", type=int, default=0)
    predict_cmd.add_argument("--out", required=True, help="output .npy with one int64 per test image")
    for sub in (sample, predict_cmd):
        sub.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return parser


COMMANDS = {"train": command_train, "evaluate": command_evaluate, "sample": command_sample,
            "predict": command_predict}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "device", None):
        try:
            settings.pick_device(args.device)
        except ValueError as error:
            parser.error(str(error))
    try:
        return COMMANDS[args.command](args, parser)
    except (DataError, FileNotFoundError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
