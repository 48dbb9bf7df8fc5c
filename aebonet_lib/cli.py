"""The `aebonet` command: one subcommand per step of the pipeline.

Each `run_*` function is a thin layer over library functions a chapter also calls;
TensorFlow is imported only by the commands that need it, so `aebonet --help`
and `aebonet phantom` start in a blink.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from .errors import AebonetError

EPILOG_DATA = "SRC is a dataset folder (Kaggle or official RSNA layout, or a CSV), a cache folder made by `aebonet prepare`, or phantom[:N] for N synthetic radiographs."


def positive_int(text: str) -> int:
    """Parse a whole number greater than zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def add_command(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """Add a subcommand whose --help ends with an example."""
    return sub.add_parser(
        name, help=help.replace("%", "%%"), description=help, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Add the options shared by `pretrain` and `train`."""
    p.add_argument("--data", default="phantom", metavar="SRC", help="dataset (default: phantom). " + EPILOG_DATA)
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"], help="hyper-parameter preset (default: cpu)")
    p.add_argument("--out", required=True, type=Path, metavar="RUN", help="run folder to write")
    p.add_argument("--epochs", type=positive_int, help="override the preset's number of epochs")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN")
    p.add_argument("--size", type=positive_int, help="override the image size (pixels)")
    p.add_argument("--width", type=float, help="override the width multiplier on filter counts")
    p.add_argument("--batch-size", type=positive_int, help="override the batch size")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="numeric precision (default: the preset's)")
    p.add_argument("--jit", action="store_true", help="compile with XLA")
    p.add_argument("--distribute", choices=["none", "mirrored", "multiworker"], default="none",
                   help="tf.distribute strategy (default: none)")
    p.add_argument("--deterministic", action="store_true", help="enable TensorFlow op determinism (slower)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad inputs (listed in a report) instead of stopping")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="aebonet", description="AE-BoNet bone age estimation: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = add_command(sub, "phantom", "write synthetic hand radiographs in the Kaggle RSNA layout",
                    "aebonet phantom --out phantom_data --n 1000 --size 256 --seed 0")
    p.add_argument("--out", required=True, type=Path, help="folder to create (must not exist or be empty)")
    p.add_argument("--n", required=True, type=int, help="number of images")
    p.add_argument("--size", default="256", help="image size: N for NxN, or WxH such as 1600x2080 (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes byte-identical files")
    p.add_argument("--label-noise", type=float, default=0.0, metavar="SD",
                   help="standard deviation (months) of reader noise added to the labels (default 0)")
    p.set_defaults(func=run_phantom)

    p = add_command(sub, "prepare", "check a dataset and build its preprocessing cache",
                    "aebonet prepare --data rsna/ --size 256 --out rsna_cache")
    p.add_argument("--data", required=True, metavar="DIR", help="raw dataset folder, or phantom[:N]")
    p.add_argument("--layout", default="auto", choices=["auto", "kaggle", "official", "csv"], help="dataset layout (default: auto)")
    p.add_argument("--csv", type=Path, help="with --layout csv: the label file")
    p.add_argument("--image-col", default="image", help="with --layout csv: column with an image path or id")
    p.add_argument("--age-col", default="boneage", help="with --layout csv: column with bone age in months")
    p.add_argument("--sex-col", default=None, help="with --layout csv: optional sex column")
    p.add_argument("--size", type=positive_int, default=256, help="square output size in pixels (default 256)")
    p.add_argument("--clahe", action="store_true", help="apply CLAHE contrast equalization")
    p.add_argument("--normalize", action="store_true", help="apply percentile contrast normalization")
    p.add_argument("--out", required=True, type=Path, metavar="CACHE_DIR", help="cache folder to write")
    p.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad inputs, listing them in bad_inputs_report.csv")
    p.set_defaults(func=run_prepare)

    p = add_command(sub, "pretrain", "train the autoencoder without labels, in stages",
                    "aebonet pretrain --data phantom --preset cpu --out runs/ae")
    add_training_options(p)
    p.add_argument("--decoder", choices=["upsample_conv", "conv_upsample", "transpose"], help="decoder variant")
    p.set_defaults(func=run_pretrain)

    p = add_command(sub, "train", "fine-tune a bone age regressor (AE-BoNet, from scratch, or an ImageNet baseline)",
                    "aebonet train --data phantom --preset cpu --encoder runs/ae/encoder.keras --out runs/reg")
    add_training_options(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--encoder", type=Path, help="pretrained encoder (RUN/encoder.keras) for AE-BoNet")
    group.add_argument("--backbone", choices=["aebonet", "scratch", "xception", "vgg16", "inceptionv3", "mobilenet", "resnet50"],
                       help="backbone (default: aebonet with --encoder, else scratch)")
    p.add_argument("--weights", default=None, metavar="imagenet|none|PATH",
                   help="baseline weights: imagenet (needs internet or the Keras cache), none, or a local weights file")
    p.add_argument("--sex-input", action="store_true", help="give the model the child's sex as a second input")
    p.add_argument("--freeze-epochs", type=int, help="epochs with the encoder frozen before fine-tuning it")
    p.set_defaults(func=run_train)

    p = add_command(sub, "evaluate", "measure a model's MAE and MSE with 95% bootstrap intervals",
                    "aebonet evaluate --model runs/reg/model.keras --data phantom --split test")
    p.add_argument("--model", required=True, type=Path, help="model file (RUN/model.keras)")
    p.add_argument("--data", default="phantom", metavar="SRC", help="dataset (default: phantom). " + EPILOG_DATA)
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="which split (default: test)")
    p.add_argument("--out", type=Path, help="folder for metrics.json and predictions.csv (default: the model's folder)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad inputs instead of stopping")
    p.set_defaults(func=run_evaluate)

    p = add_command(sub, "predict", "predict bone age for radiographs",
                    "aebonet predict --model runs/reg/model.keras hand.png --sex F")
    p.add_argument("--model", required=True, type=Path, help="model file (RUN/model.keras)")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="image files or folders of images")
    p.add_argument("--sex", choices=["M", "F"], help="the child's sex (needed by models trained with --sex-input)")
    p.add_argument("--out", type=Path, help="write the CSV here instead of printing it")
    p.set_defaults(func=run_predict)

    p = add_command(sub, "demo", "run the whole pipeline on the phantom on a CPU (about 5 minutes)",
                    "aebonet demo --out runs/demo")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the runs (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="numeric precision (default: the preset's)")
    p.set_defaults(func=run_demo)

    p = add_command(sub, "report", "write tables and figures for finished runs",
                    "aebonet report --runs runs/demo/aebonet runs/demo/scratch --out report")
    p.add_argument("--runs", required=True, nargs="+", type=Path, metavar="RUN", help="run folders")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write")
    p.set_defaults(func=run_report)

    p = add_command(sub, "experiment", "run an experiment beyond the paper",
                    "aebonet experiment label-efficiency --data phantom --preset cpu --out exp/labels")
    p.add_argument("name", choices=["label-efficiency", "sex-input", "decoder"], help="which experiment")
    p.add_argument("--data", default="phantom", metavar="SRC", help="dataset (default: phantom). " + EPILOG_DATA)
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"], help="hyper-parameter preset (default: cpu)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write")
    p.add_argument("--seeds", type=positive_int, help="number of seeds (default: the experiment's)")
    p.set_defaults(func=run_experiment)

    p = add_command(sub, "bench", "measure speed on this machine and write a JSON file and a Markdown table",
                    "aebonet bench --quick --out bench.json")
    p.add_argument("--quick", action="store_true", help="a short run (under 2 minutes)")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON file to write (a .md table goes beside it)")
    p.set_defaults(func=run_bench)
    return parser


def run_phantom(args: argparse.Namespace) -> int:
    """Write a phantom dataset in the Kaggle layout."""
    from . import phantom

    phantom.write_dataset(args.out, n=args.n, size=phantom.parse_size(args.size), seed=args.seed, label_noise_sd=args.label_noise)
    print(f"wrote {args.n} images to {args.out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Build the preprocessing cache."""
    raise AebonetError("prepare: not implemented yet")


def run_pretrain(args: argparse.Namespace) -> int:
    """Pretrain the autoencoder."""
    raise AebonetError("pretrain: not implemented yet")


def run_train(args: argparse.Namespace) -> int:
    """Train a regressor."""
    raise AebonetError("train: not implemented yet")


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a model."""
    raise AebonetError("evaluate: not implemented yet")


def run_predict(args: argparse.Namespace) -> int:
    """Predict bone ages."""
    raise AebonetError("predict: not implemented yet")


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo pipeline."""
    raise AebonetError("demo: not implemented yet")


def run_report(args: argparse.Namespace) -> int:
    """Write a report."""
    raise AebonetError("report: not implemented yet")


def run_experiment(args: argparse.Namespace) -> int:
    """Run an experiment."""
    raise AebonetError("experiment: not implemented yet")


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks."""
    raise AebonetError("bench: not implemented yet")


def main(argv: list[str] | None = None) -> int:
    """Run the `aebonet` command; bad input ends in one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except AebonetError as e:
        print(f"aebonet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aebonet {args.command}: interrupted; rerun with --resume where the command has it", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: one line, the traceback on request
        if os.environ.get("AEBONET_DEBUG"):
            traceback.print_exc()
        else:
            print(f"aebonet {args.command}: internal error: {type(e).__name__}: {e} "
                  "(set AEBONET_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
