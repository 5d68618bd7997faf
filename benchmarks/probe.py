"""Validation probes for tuning a training recipe: train one configuration, record validation numbers, never the
test set's (the test set is for `make bench`, once per final model).

    python -m benchmarks.probe aae lr_schedule=cosine --seed 1
    python -m benchmarks.probe saae label_aware=true batch_size=100 lr=1e-3 adversarial_lr=1e-3 --every 5

Options are TrainConfig fields as key=value (values read as JSON, else as text); the model's defaults fill the
rest, and options it does not use are refused as everywhere else. Every `--every` epochs and at the end, one JSON line
goes to benchmarks/results/probes.jsonl (--out): the model, the options, the seed, the epoch, the losses and the
validation numbers of the model's measures (evaluation.validation_metrics; the judge reads 500 digits per label).
With --test, one more line holds the test set's numbers of the trained model (evaluation.test_metrics): for a recipe
already chosen on the validation split, measured once.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from saae_lib import evaluation, settings
from saae_lib.training import ConfigError, TrainConfig, Trainer

OUT = Path("benchmarks/results/probes.jsonl")
JUDGED_PER_LABEL = 500  # generated digits per label read by the judge at each measurement


def validation_numbers(trainer: Trainer) -> dict:
    """The model's measures on the validation split."""
    return evaluation.validation_metrics(trainer, judged_per_label=JUDGED_PER_LABEL)


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
    parser.add_argument("--test", action="store_true",
                        help="once trained, measure the test set too (a final recipe only: tune on validation)")
    args = parser.parse_args(argv)
    if settings.smoke_mode():
        parser.error("probes measure real runs: unset SAAE_FAST")
    try:
        options = parse_options(args.options)
        trainer = Trainer(TrainConfig(model=args.model, seed=args.seed, **options))
    except (ConfigError, ValueError, TypeError) as error:
        parser.error(str(error))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def write(numbers: dict):
        row = {"model": args.model, "options": options, "seed": args.seed, **numbers,
               "elapsed_seconds": time.perf_counter() - start}
        with out.open("a") as file:
            file.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def record(trainer, epoch_record):
        epoch = epoch_record["epoch"]
        if epoch % args.every and epoch != trainer.config.epochs:
            return
        write({**epoch_record, **validation_numbers(trainer)})

    trainer.fit(callback=record, progress=False)
    if args.test:
        write({"epoch": len(trainer.history), "test": evaluation.test_metrics(trainer)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
