"""Validation probes for tuning a training recipe: train one configuration, record validation numbers, never the
test set's (the test set is for `make bench`, once per final model).

    python -m benchmarks.probe aae lr_schedule=cosine --seed 1
    python -m benchmarks.probe saae label_aware=true batch_size=100 lr=1e-3 adversarial_lr=1e-3 --every 5

Options are TrainConfig fields as key=value (values read as JSON, else as text); the model's defaults fill the
rest, and options it does not use are refused as everywhere else. Every `--every` epochs and at the end, one JSON line
goes to benchmarks/results/probes.jsonl (--out): the model, the options, the seed, the epoch, the losses and the
validation numbers of the model's measures (evaluation.validation_metrics; the judge reads 500 digits per label).
--ema DECAY [DECAY ...] also keeps an exponential moving average of the weights for each decay (updated after
every training step; it never changes the run) and measures its validation error as val_error_ema_DECAY;
--recalibrate also measures the validation error with the batch-norm statistics re-estimated on the clean training
images (val_error_recalibrated, and val_error_ema_DECAY_recalibrated): probes of what evaluation can gain.
With --test, one more line holds the test set's numbers of the trained model (evaluation.test_metrics): for a recipe
already chosen on the validation split, measured once.
--saved FOLDER measures a run trained before (FOLDER/checkpoint.pt, e.g. runs/semi_100_seed1) instead of training
one: one line with its validation numbers after its last epoch (and --recalibrate's). The model, options and seed
must be the ones it was trained with (refused otherwise, so the record says what was measured); --ema needs the
training steps and is refused.
"""

import argparse
import copy
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from saae_lib import evaluation, metrics, settings
from saae_lib.checkpoints import CheckpointError, atomic_save, load_checkpoint, same_run, save_checkpoint
from saae_lib.training import ConfigError, TrainConfig, Trainer

OUT = Path("benchmarks/results/probes.jsonl")
COMMIT = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
MACHINE = (f"{torch.get_num_threads()}-thread CPU, {'with' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'no'} "
           "bf16 units" if not torch.cuda.is_available() else torch.cuda.get_device_name())
JUDGED_PER_LABEL = 500  # generated digits per label read by the judge at each measurement


def validation_numbers(trainer: Trainer) -> dict:
    """The model's measures on the validation split."""
    return evaluation.validation_metrics(trainer, judged_per_label=JUDGED_PER_LABEL)


def with_averages(trainer: Trainer, decays: list[float]) -> dict[str, AveragedModel]:
    """EMA copies of the model, updated after every training step (the run itself is unchanged)."""
    averages = {f"{decay:g}": AveragedModel(trainer.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
                for decay in decays}
    step = trainer.step_function()

    def step_and_average(x, y):
        losses = step(x, y)
        for average in averages.values():
            average.update_parameters(trainer.model)
        return losses

    trainer.step_function = lambda: step_and_average
    return averages


@torch.no_grad()
def recalibrated(model, images, batch_size=500):
    """A copy of the model whose batch-norm statistics are the plain averages over `images` (clean training images)."""
    model = copy.deepcopy(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    for start in range(0, len(images), batch_size):
        model.encoder(images[start:start + batch_size])
    return model.eval()


def evaluation_variants(trainer: Trainer, averages: dict, recalibrate: bool) -> dict:
    """Validation error of the EMA copies and of batch-norm statistics re-estimated on clean images."""
    data, result = trainer.data, {}
    models = {"": trainer.model, **{f"_ema_{name}": average.module for name, average in averages.items()}}
    for suffix, model in models.items():
        if suffix:
            result[f"val_error{suffix}"] = metrics.classification_error(
                metrics.predict(model.eval(), data.val_images), data.val_labels)
        if recalibrate:
            result[f"val_error{suffix}_recalibrated"] = metrics.classification_error(
                metrics.predict(recalibrated(model, data.train_images), data.val_images), data.val_labels)
    return result


def saved_run(folder: Path, asked: Trainer) -> Trainer:
    """The run saved in `folder`, if it was trained with exactly what `asked` would train, to its last epoch."""
    trainer = load_checkpoint(folder, data=asked.data)
    saved, wanted = asdict(trainer.config), asdict(asked.config)
    if not same_run(saved, wanted):
        differ = ", ".join(f"{key}={saved[key]!r}" for key in sorted(saved) if saved[key] != wanted.get(key))
        raise ValueError(f"{folder} was trained with other settings ({differ}): give the options and --seed it was "
                         "trained with")
    if len(trainer.history) != trainer.config.epochs:
        raise ValueError(f"{folder} holds {len(trainer.history)} of its {trainer.config.epochs} epochs: finish its "
                         "training first")
    return trainer


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator:
            raise ValueError(f"options are key=value, got {pair!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("options", nargs="*", help="TrainConfig options, key=value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=5, help="measure every this many epochs (and at the end)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--ema", type=float, nargs="+", default=[], metavar="DECAY",
                        help="also measure EMA weights with these decays (classification models)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="also measure with batch-norm statistics re-estimated on clean training images")
    parser.add_argument("--save", metavar="FOLDER",
                        help="save the trained run there (checkpoint.pt, and ema-DECAY.pt: each average's weights)")
    parser.add_argument("--test", action="store_true",
                        help="once trained, measure the test set too (a final recipe only: tune on validation)")
    parser.add_argument("--saved", metavar="FOLDER",
                        help="measure this run trained before (its checkpoint.pt) instead of training one")
    args = parser.parse_args(argv)
    if settings.smoke_mode():
        parser.error("probes measure real runs: unset SAAE_FAST")
    try:
        options = parse_options(args.options)
        trainer = Trainer(TrainConfig(model=args.model, seed=args.seed, **options))
    except (ConfigError, ValueError, TypeError) as error:
        parser.error(str(error))
    if (args.ema or args.recalibrate) and "classification" not in trainer.model.measures:
        parser.error("--ema and --recalibrate measure classification error: use semi or supervised")
    if args.recalibrate and not trainer.config.batch_norm:
        parser.error("--recalibrate needs batch_norm=true")
    if args.saved:
        if args.ema or args.save or args.test:
            parser.error("--saved measures a trained run's validation numbers: --ema, --save and --test need the "
                         "training itself")
        try:
            trainer = saved_run(Path(args.saved), trainer)
        except (CheckpointError, ValueError) as error:
            parser.error(str(error))
    averages = with_averages(trainer, args.ema)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def write(numbers: dict):
        row = {"model": args.model, "options": options, "seed": args.seed, "commit": COMMIT, "machine": MACHINE,
               **numbers,
               "elapsed_seconds": time.perf_counter() - start}
        with out.open("a") as file:
            file.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def record(trainer, epoch_record):
        epoch = epoch_record["epoch"]
        if epoch % args.every and epoch != trainer.config.epochs:
            return
        write({**epoch_record, **validation_numbers(trainer), **evaluation_variants(trainer, averages,
                                                                                     args.recalibrate)})

    if args.saved:
        write({"epoch": len(trainer.history), **trainer.history[-1], **validation_numbers(trainer),
               **evaluation_variants(trainer, averages, args.recalibrate), "saved": args.saved})
        return 0
    trainer.fit(callback=record, progress=False)
    if args.save:
        save_checkpoint(trainer, Path(args.save) / "checkpoint.pt")
        for name, average in averages.items():
            atomic_save(average.module.state_dict(), Path(args.save) / f"ema-{name}.pt")
    if args.test:
        write({"epoch": len(trainer.history), "test": evaluation.test_metrics(trainer)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
