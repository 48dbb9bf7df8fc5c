"""The `aebonet` command's arguments: one subparser per command, with examples and help."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from aebonet_lib.options import DECODERS, MAX_PIXELS, OBJECTIVES, PRECISIONS, PRESET_NAMES, SPLIT_KINDS

SPLIT_HELP = ("how to split SRC into train/val/test: paper (default: at random, seeded, with the preset's fractions), "
              "stratified (the same sizes, stratified by age) or official (the RSNA challenge's own sets; "
              "needs the official RSNA release)")
NOT_CLINICAL = ("Not for clinical use: the estimates are for research and education, from a model that is not a "
                "medical device and was not validated for diagnosis. The shipped rsna-cpu model was trained on RSNA "
                "Pediatric Bone Age Challenge data (non-commercial research and education use, with attribution; "
                "see NOTICE).")
MAX_PIXELS_HELP = (f"refuse images with more pixels than N before decoding them (default {MAX_PIXELS}: a guard "
                   "against decompression bombs; a hand radiograph has 2-10 million)")
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


def positive_minutes(text: str) -> float:
    """Parse a number of minutes greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes, such as 45 or 7.5, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def add_command(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """Add a subcommand whose --help ends with an example."""
    return sub.add_parser(
        name, help=help.replace("%", "%%"), description=help, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_preset_option(p: argparse.ArgumentParser) -> None:
    """Add --preset, the hyper-parameter preset of options.PRESET_NAMES."""
    p.add_argument("--preset", default="cpu", choices=sorted(PRESET_NAMES), help="hyper-parameter preset (default: cpu)")


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """Add --precision, one of options.PRECISIONS."""
    p.add_argument("--precision", choices=PRECISIONS,
                   help="numeric precision (default: auto, the fastest this hardware computes well)")


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Add the options shared by `pretrain` and `train`."""
    p.add_argument("--data", default="phantom", metavar="SRC", help="dataset (default: phantom). " + EPILOG_DATA)
    p.add_argument("--split", choices=SPLIT_KINDS, help=SPLIT_HELP + "; a resumed run keeps its own")
    add_preset_option(p)
    p.add_argument("--out", required=True, type=Path, metavar="RUN", help="run folder to write")
    p.add_argument("--epochs", type=positive_int, help="override the preset's number of epochs")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN")
    p.add_argument("--budget", type=positive_minutes, metavar="MINUTES",
                   help="fit the run in MINUTES (counted once the data are loaded): time a few steps first, then "
                        "train as many of the recipe's epochs (the preset's or --epochs) as fit, recorded in "
                        "config.json; --resume keeps that plan")
    p.add_argument("--size", type=positive_int, help="override the image size (pixels)")
    p.add_argument("--width", type=float, help="override the width multiplier on filter counts")
    p.add_argument("--batch-size", type=positive_int, help="override the batch size")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    add_precision_option(p)
    p.add_argument("--jit", action="store_true", help="compile with XLA")
    p.add_argument("--distribute", choices=["none", "mirrored", "multiworker"], default="none",
                   help="tf.distribute strategy (default: none)")
    p.add_argument("--deterministic", action="store_true", help="enable TensorFlow op determinism (slower)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad inputs (listed in a report) instead of stopping")


def add_phantom(sub) -> None:
    """Add `aebonet phantom`: write synthetic hand radiographs in the Kaggle RSNA layout."""
    p = add_command(sub, "phantom", "write synthetic hand radiographs in the Kaggle RSNA layout",
                    "aebonet phantom --out phantom_data --n 1000 --size 256 --seed 0")
    p.add_argument("--out", type=Path, help="folder to create (must not exist or be empty); not with --report")
    p.add_argument("--n", type=int, help="number of images (RSNA's training set has 12611; --report: default 500)")
    p.add_argument("--size", default="256", help="image size: N for NxN, or WxH such as 1600x2080 (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes byte-identical files")
    p.add_argument("--label-noise", type=float, default=None, metavar="SD",
                   help="standard deviation (months) of reader noise added to the labels "
                        "(default: one radiologist's, phantom.READER_SD_MONTHS; 0 for exact labels)")
    p.add_argument("--style", choices=("raw", "registered"), default=None,
                   help="raw (default: grey plate, markers, hand anywhere in the frame, like the RSNA training set) "
                        "or registered (black background, hand in a fixed frame)")
    p.add_argument("--no-variation", action="store_true",
                   help="draw the average child of each age (no per-child bone sizes or bone-group tempo)")
    p.add_argument("--report", action="store_true",
                   help="instead of writing images, compare phantoms with real radiographs on the realism measures")
    p.add_argument("--real", type=Path, default=None, metavar="DIR",
                   help="--report: the real radiographs to compare with (default ../shared/rsna_bone_age_256)")
    p.add_argument("--report-out", type=Path, default=None, metavar="CSV", help="--report: also write the table here")


def add_prepare(sub) -> None:
    """Add `aebonet prepare`: check a dataset and build its preprocessing cache."""
    p = add_command(sub, "prepare", "check a dataset and build its preprocessing cache",
                    "aebonet prepare --data rsna/ --size 256 --out rsna_cache")
    p.add_argument("--data", required=True, metavar="DIR", help="raw dataset folder, or phantom[:N]")
    p.add_argument("--layout", default="auto", choices=["auto", "kaggle", "official", "csv", "folder"],
                   help="dataset layout (default: auto; folder: unlabeled images)")
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
    p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, metavar="N", help=MAX_PIXELS_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom and of the split shown (default 0)")
    p.add_argument("--split", choices=SPLIT_KINDS, default="paper",
                   help="the split shown: paper (default: at random, seeded by --seed, 70/15/15), stratified (the same "
                        "sizes, stratified by age) or official (the RSNA challenge's own sets; needs its release)")


def add_pretrain(sub) -> None:
    """Add `aebonet pretrain`: train the autoencoder without labels, in stages."""
    p = add_command(sub, "pretrain", "train the autoencoder without labels, in stages",
                    "aebonet pretrain --data phantom --preset cpu --out runs/ae\n"
                    "  aebonet pretrain --data rsna/ --preset colab --budget 45 --out runs/ae --resume   # a class on Colab")
    add_training_options(p)
    p.add_argument("--decoder", choices=DECODERS, help="decoder variant")
    p.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="what the network learns to redraw: autoencoder (the paper's, the default: the whole image) or "
                        "masked (beyond the paper: half the image's patches hidden, the whole image the target)")


def add_train(sub) -> None:
    """Add `aebonet train`: fine-tune a bone age regressor (AE-BoNet, from scratch, or an ImageNet baseline)."""
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


def add_evaluate(sub) -> None:
    """Add `aebonet evaluate`: measure a model's MAE and MSE with 95% bootstrap intervals."""
    p = add_command(sub, "evaluate", "measure a model's MAE and MSE with 95% bootstrap intervals",
                    "aebonet evaluate --model runs/reg/model.keras --split test")
    p.add_argument("--model", required=True, type=Path, metavar="MODEL",
                   help="model file (RUN/model.keras) or the name of a shipped model")
    p.add_argument("--data", metavar="SRC", help="dataset (default: the data the model was trained on, as its run "
                   "recorded it). " + EPILOG_DATA)
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="which split (default: test): the one saved in the model's run folder, else the data's own")
    p.add_argument("--out", type=Path, help="folder for metrics.json and predictions.csv (default: the model's folder)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad inputs instead of stopping")


def add_predict(sub) -> None:
    """Add `aebonet predict`: predict bone age for radiographs (not for clinical use)."""
    p = add_command(sub, "predict", "predict bone age for radiographs (research and education only, not for clinical "
                    "use)", "aebonet predict --model runs/reg/model.keras hand.png --sex F")
    p.epilog = f"{p.epilog}\n\n{textwrap.fill(NOT_CLINICAL, 79)}"
    p.add_argument("--model", required=True, type=Path, metavar="MODEL",
                   help="model file (RUN/model.keras) or the name of a shipped model")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="image files or folders of images")
    sex = p.add_mutually_exclusive_group()
    sex.add_argument("--sex", choices=["M", "F"],
                     help="the child's sex, for every image (needed by models trained with --sex-input)")
    sex.add_argument("--sex-from", type=Path, metavar="CSV",
                     help="each image's sex from a label file: an id column (the file name without suffix: id, "
                          "Image ID or Case ID) and a sex column (male True/False, or Sex M/F), as the RSNA files have")
    p.add_argument("--out", type=Path, help="write the CSV here instead of printing it")
    p.add_argument("--skip-bad", action="store_true",
                   help="predict the usable images and list the others, with why, in bad_inputs_report.csv "
                        "(beside --out, else in the current folder)")
    p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, metavar="N", help=MAX_PIXELS_HELP)


def add_demo(sub) -> None:
    """Add `aebonet demo`: run the whole pipeline on the phantom on a CPU (about 5 minutes)."""
    p = add_command(sub, "demo", "run the whole pipeline on the phantom on a CPU (about 5 minutes)",
                    "aebonet demo --out runs/demo")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the runs (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_precision_option(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")


def add_report(sub) -> None:
    """Add `aebonet report`: write tables and figures for finished runs."""
    p = add_command(sub, "report", "write tables and figures for finished runs",
                    "aebonet report --runs runs/demo/aebonet runs/demo/scratch --out report")
    p.add_argument("--runs", required=True, nargs="+", type=Path, metavar="RUN", help="run folders")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write")


def add_experiment(sub) -> None:
    """Add `aebonet experiment`: run an experiment beyond the paper."""
    p = add_command(sub, "experiment", "run an experiment beyond the paper",
                    "aebonet experiment label-efficiency --data phantom --preset cpu --out exp/labels")
    p.add_argument("name", choices=["label-efficiency", "label-grid", "sex-input", "decoder", "real", "best-cpu"],
                   help="which experiment (real: the paper's experiment on real radiographs; label-grid: pretraining "
                        "budgets, linear probes and fine-tuning at equal steps, seeds in every interval; best-cpu: "
                        "the shipped rsna-cpu model, chosen among candidate recipes on a slice of the training split)")
    p.add_argument("--data", default="phantom", metavar="SRC", help="dataset (default: phantom). " + EPILOG_DATA)
    p.add_argument("--preset", choices=sorted(PRESET_NAMES),
                   help="hyper-parameter preset (default: cpu; rsna-cpu for the real experiment, rsna-class for a quick one)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write")
    p.add_argument("--seeds", type=positive_int, help="number of seeds (default: the experiment's)")
    p.add_argument("--fractions", type=fraction_list, metavar="F,F,...",
                   help="label-efficiency: fractions of the training labels, such as 0.1,0.3,1 (default: the preset's)")
    p.add_argument("--steps", type=positive_int,
                   help="label-efficiency: gradient steps per fine-tuning run, whatever the fraction (default: the preset's)")
    p.add_argument("--epochs", type=positive_int, help="sex-input, decoder: fine-tuning epochs (default: the preset's)")
    p.add_argument("--pretrain-epochs", type=positive_int, help="autoencoder epochs when pretraining here (default: the preset's)")
    p.add_argument("--pretrain", type=Path, metavar="RUN",
                   help="label-efficiency, sex-input: pretraining run folder to reuse (or to pretrain in)")
    p.add_argument("--encoder", type=Path, metavar="ENCODER",
                   help="label-efficiency: an encoder pretrained on other images (such as phantoms: RUN/encoder.keras), "
                        "used as it is instead of pretraining on this data")
    p.add_argument("--size", type=positive_int, help="override the preset's image size (pixels)")
    p.add_argument("--width", type=float, help="override the preset's width multiplier on filter counts")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment in --out")
    p.add_argument("--part", type=part_of, metavar="K/N",
                   help="real, best-cpu: train only every N-th run from the K-th (0-based), to share the plan between N "
                        "processes; then run once more without --part to collect the results")
    p.add_argument("--collect-only", action="store_true",
                   help="real: train nothing more; collect the results of the runs that have finished")
    p.add_argument("--stage", choices=["all", "pretrain", "probes", "finetune"], default=None,
                   help="label-grid: run one stage only (default: all, in that order; rerun to resume)")
    p.add_argument("--methods", type=lambda text: tuple(text.split(",")), metavar="M,M,...",
                   help="label-grid: fine-tune only these methods (scratch, autoencoder, masked; default: the grid's)")
    p.add_argument("--collect", type=Path, metavar="DIR",
                   help="label-grid: write runs.csv, predictions and summaries of what has finished into DIR")


def add_bench(sub) -> None:
    """Add `aebonet bench`: measure speed on this machine and write a JSON file and a Markdown table."""
    p = add_command(sub, "bench", "measure speed on this machine and write a JSON file and a Markdown table",
                    "aebonet bench --quick --out bench.json")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a short run (under 2 minutes on a 2-core CPU)")
    mode.add_argument("--gpu-check", action="store_true",
                      help="the paper's 256 px autoencoder in fp32, bf16 and fp16, with and without XLA, the peaks "
                           "and the input pipeline (a few minutes on one GPU)")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON file to write (a .md table goes beside it)")
    p.add_argument("--demo", nargs="*", choices=["fp32", "bf16", "fp16"], metavar="PRECISION",
                   help="also time `aebonet demo` (minutes), once per precision given (none: the preset's)")
    p.add_argument("--gpu-json", type=Path, metavar="FILE",
                   help="a bench JSON made with --gpu-check on a GPU: its utilisation feeds the paper-schedule estimate")


FORCE_HELP = {
    "phantom": "--report: replace an existing --report-out file",
    "prepare": "rebuild a cache folder that holds a cache of another dataset",
    "evaluate": "replace metrics.json and predictions.csv in an --out folder that has them",
    "predict": "replace an existing --out file",
    "bench": "replace an existing --out file and its .md table",
}


def add_force_options(sub) -> None:
    """Add --force to every command that would otherwise refuse to replace a user's file."""
    for name, help in FORCE_HELP.items():
        sub.choices[name].add_argument("--force", action="store_true", help=help)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="aebonet", description="AE-BoNet bone age estimation: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_phantom, add_prepare, add_pretrain, add_train, add_evaluate, add_predict, add_demo, add_report, add_experiment, add_bench):
        add(sub)
    add_force_options(sub)
    return parser


def part_of(text: str) -> tuple[int, int]:
    """Parse K/N, the K-th (0-based) of N parts of an experiment's runs."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/2, got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"K/N needs 0 <= K < N, got {text!r}")
    return k, n


def fraction_list(text: str) -> tuple[float, ...]:
    """Parse comma-separated fractions of the labels, each in (0, 1]."""
    try:
        fractions = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions such as 0.1,0.3,1, got {text!r}") from None
    if not all(0 < f <= 1 for f in fractions):
        raise argparse.ArgumentTypeError(f"each fraction must be in (0, 1], got {text!r}")
    return fractions
