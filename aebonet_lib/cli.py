"""The `aebonet` command: one subcommand per step of the pipeline.

Each `run_*` function is a thin layer over library functions a chapter also calls;
TensorFlow is imported only by the commands that need it, so `aebonet --help`
and `aebonet phantom` start in a blink.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

from .config import DECODERS, PRECISIONS, PRESETS, SPLIT_KINDS
from .errors import AebonetError

SPLIT_HELP = ("how to split SRC into train/val/test: paper (default: at random, seeded, with the preset's fractions), "
              "stratified (the same sizes, stratified by age) or official (the RSNA challenge's own sets; "
              "needs the official RSNA release)")
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


def add_preset_option(p: argparse.ArgumentParser) -> None:
    """Add --preset, the hyper-parameter preset of config.PRESETS."""
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="hyper-parameter preset (default: cpu)")


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """Add --precision, one of config.PRECISIONS."""
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
    p.add_argument("--out", required=True, type=Path, help="folder to create (must not exist or be empty)")
    p.add_argument("--n", required=True, type=int, help="number of images (RSNA's training set has 12611)")
    p.add_argument("--size", default="256", help="image size: N for NxN, or WxH such as 1600x2080 (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes byte-identical files")
    p.add_argument("--label-noise", type=float, default=0.0, metavar="SD",
                   help="standard deviation (months) of reader noise added to the labels (default 0)")
    p.set_defaults(func=run_phantom)


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
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom and of the split shown (default 0)")
    p.add_argument("--split", choices=SPLIT_KINDS, default="paper",
                   help="the split shown: paper (default: at random, seeded by --seed, 70/15/15), stratified (the same "
                        "sizes, stratified by age) or official (the RSNA challenge's own sets; needs its release)")
    p.set_defaults(func=run_prepare)


def add_pretrain(sub) -> None:
    """Add `aebonet pretrain`: train the autoencoder without labels, in stages."""
    p = add_command(sub, "pretrain", "train the autoencoder without labels, in stages",
                    "aebonet pretrain --data phantom --preset cpu --out runs/ae")
    add_training_options(p)
    p.add_argument("--decoder", choices=DECODERS, help="decoder variant")
    p.set_defaults(func=run_pretrain)


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
    p.set_defaults(func=run_train)


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
    p.set_defaults(func=run_evaluate)


def add_predict(sub) -> None:
    """Add `aebonet predict`: predict bone age for radiographs."""
    p = add_command(sub, "predict", "predict bone age for radiographs",
                    "aebonet predict --model runs/reg/model.keras hand.png --sex F")
    p.add_argument("--model", required=True, type=Path, metavar="MODEL",
                   help="model file (RUN/model.keras) or the name of a shipped model")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="image files or folders of images")
    p.add_argument("--sex", choices=["M", "F"], help="the child's sex (needed by models trained with --sex-input)")
    p.add_argument("--out", type=Path, help="write the CSV here instead of printing it")
    p.set_defaults(func=run_predict)


def add_demo(sub) -> None:
    """Add `aebonet demo`: run the whole pipeline on the phantom on a CPU (about 5 minutes)."""
    p = add_command(sub, "demo", "run the whole pipeline on the phantom on a CPU (about 5 minutes)",
                    "aebonet demo --out runs/demo")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the runs (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_precision_option(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.set_defaults(func=run_demo)


def add_report(sub) -> None:
    """Add `aebonet report`: write tables and figures for finished runs."""
    p = add_command(sub, "report", "write tables and figures for finished runs",
                    "aebonet report --runs runs/demo/aebonet runs/demo/scratch --out report")
    p.add_argument("--runs", required=True, nargs="+", type=Path, metavar="RUN", help="run folders")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write")
    p.set_defaults(func=run_report)


def add_experiment(sub) -> None:
    """Add `aebonet experiment`: run an experiment beyond the paper."""
    p = add_command(sub, "experiment", "run an experiment beyond the paper",
                    "aebonet experiment label-efficiency --data phantom --preset cpu --out exp/labels")
    p.add_argument("name", choices=["label-efficiency", "sex-input", "decoder", "real"],
                   help="which experiment (real: the paper's experiment and label efficiency on real radiographs)")
    p.add_argument("--data", default="phantom", metavar="SRC", help="dataset (default: phantom). " + EPILOG_DATA)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="hyper-parameter preset (default: cpu; rsna-cpu for the real experiment)")
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
    p.add_argument("--size", type=positive_int, help="override the preset's image size (pixels)")
    p.add_argument("--width", type=float, help="override the preset's width multiplier on filter counts")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment in --out")
    p.add_argument("--part", type=part_of, metavar="K/N",
                   help="real: train only every N-th run from the K-th (0-based), to share the plan between N "
                        "processes; then run once more without --part to collect the results")
    p.add_argument("--collect-only", action="store_true",
                   help="real: train nothing more; collect the results of the runs that have finished")
    p.set_defaults(func=run_experiment)


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
    p.set_defaults(func=run_bench)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="aebonet", description="AE-BoNet bone age estimation: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_phantom, add_prepare, add_pretrain, add_train, add_evaluate, add_predict, add_demo, add_report, add_experiment, add_bench):
        add(sub)
    return parser


def run_phantom(args: argparse.Namespace) -> int:
    """Write a phantom dataset in the Kaggle layout (chapter 0)."""
    from . import phantom

    size = phantom.parse_size(args.size)
    out = phantom.write_dataset(args.out, n=args.n, size=size, seed=args.seed, label_noise_sd=args.label_noise)
    print(f"wrote {args.n} images and {phantom.LABELS_CSV} to {out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Check a dataset, build its preprocessing cache in --out, and print a summary."""
    from . import data

    prepared = data.load_data(
        args.data, args.size, seed=args.seed, split_kind=args.split, skip_bad=args.skip_bad, clahe=args.clahe,
        normalize=args.normalize, layout=args.layout, csv=args.csv, image_col=args.image_col, age_col=args.age_col,
        sex_col=args.sex_col, cache_dir=args.out, workers=args.workers)
    print(data.describe(prepared))
    return 0


def command_line() -> str:
    """Return the command line that started this process, for a run's config.json."""
    return shlex.join(["aebonet", *sys.argv[1:]])


def training_config(args: argparse.Namespace, batch_field: str):
    """Return the Config for `pretrain` or `train`: the run's own when resuming, else the preset with overrides."""
    from . import training
    from .config import get_config

    if args.resume and training.has_run(args.out):
        return training.saved_config(args.out)
    return get_config(args.preset, image_size=args.size, width=args.width, seed=args.seed, precision=args.precision,
                      jit=args.jit or None, deterministic=args.deterministic or None, split_kind=args.split,
                      **{batch_field: args.batch_size})


def load_training_data(args: argparse.Namespace, config):
    """Load --data at the config's image size, split as the config says (kind, fractions and seed)."""
    from .data import load_data

    return load_data(args.data, config.image_size, seed=config.seed, split=config.split,
                     split_kind=config.split_kind, skip_bad=args.skip_bad, phantom_n=config.phantom_n)


def run_pretrain(args: argparse.Namespace) -> int:
    """Pretrain the autoencoder in stages, writing RUN/encoder.keras."""
    from . import training

    training.check_run_dir(args.out, args.resume, "pretrain")
    if args.resume and training.run_finished(args.out):
        print(f"{args.out}: this pretraining run has already finished; nothing to do")
        return 0
    config = training_config(args, "ae_batch_size").replace(decoder=args.decoder)
    data = load_training_data(args, config)
    run_dir = training.pretrain(data, config, args.out, num_epochs=args.epochs, resume=args.resume,
                                distribute=args.distribute, command=command_line())
    print(f"wrote {run_dir / 'encoder.keras'} (stages: {run_dir / 'stages.csv'})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Fine-tune a regressor, writing RUN/model.keras."""
    from . import training

    training.check_run_dir(args.out, args.resume, "train")
    if args.resume and training.run_finished(args.out):
        print(f"{args.out}: this training run has already finished; nothing to do")
        return 0
    backbone = args.backbone or ("aebonet" if args.encoder else "scratch")
    print(training.backbone_summary(args.out, backbone, args.encoder, args.weights), flush=True)
    config = training_config(args, "reg_batch_size")
    data = load_training_data(args, config)
    run_dir = training.train(data, config, args.out, backbone=backbone, encoder=args.encoder, weights=args.weights,
                             sex_input=args.sex_input, num_epochs=args.epochs, resume=args.resume,
                             distribute=args.distribute, freeze_epochs=args.freeze_epochs, command=command_line())
    meta = training.read_model_meta(run_dir / "model.keras")
    kept = (f"the last epoch, {meta['epochs_done']}" if meta.get("keep") == "last"
            else f"the best epoch, {meta['best_epoch']}")
    print(f"wrote {run_dir / 'model.keras'} (kept {kept}; best validation MAE {meta['best_val_mae']:.2f} months "
          f"at epoch {meta['best_epoch']})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Print MAE and MSE with 95% intervals, write metrics.json and predictions.csv, warn of flagged images."""
    from . import predict, trust

    model = predict.resolve_model(args.model)
    data = predict.load_data_for_model(model, args.data, skip_bad=args.skip_bad)
    result = predict.evaluate(model, data, split=args.split, out_dir=args.out)
    out_dir = args.out or model.parent
    print(predict.format_metrics(result))
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'predictions.csv'}")
    summary = trust.counts_summary(result)
    if summary:  # one line on stderr: stdout stays the report
        print(summary, file=sys.stderr)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Print (or write with --out) predicted bone ages and their flags as CSV; warn on stderr of flagged images."""
    from . import predict, trust
    from .files import atomic_write

    table = predict.predict_images(args.model, args.images, sex=args.sex, progress=False)
    if args.out is None:
        print(table.to_csv(index=False), end="")
    else:
        with atomic_write(args.out) as f:
            table.to_csv(f, index=False)
        print(f"wrote {len(table)} predictions to {args.out}")
    summary = trust.flag_summary(table)
    if summary:  # one line on stderr: the CSV on stdout stays clean
        print(summary, file=sys.stderr)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Run the whole pipeline on the phantom and print the comparison table."""
    from . import demo

    start = time.perf_counter()
    table = demo.demo(args.out, seed=args.seed, precision=args.precision, resume=args.resume)
    print(demo.format_comparison(table))
    print(f"wrote the runs and comparison.csv to {args.out} in {(time.perf_counter() - start) / 60:.1f} minutes")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Write the tables (CSV, Markdown) and figures (PNG) for finished runs, and list the files written."""
    from . import report

    written = report.report(args.runs, args.out)
    print("\n".join(f"wrote {path}" for path in written))
    return 0


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


EXPERIMENT_OPTIONS = {"fractions": ("label-efficiency", "real"), "part": ("real",), "collect_only": ("real",), "steps": ("label-efficiency",),
                      "epochs": ("sex-input", "decoder"), "pretrain": ("label-efficiency", "sex-input"),
                      "pretrain_epochs": ("label-efficiency", "sex-input", "decoder"),
                      "size": ("label-efficiency", "sex-input", "decoder"),
                      "width": ("label-efficiency", "sex-input", "decoder")}


def check_experiment_options(args: argparse.Namespace) -> None:
    """Refuse an option that the chosen experiment does not take."""
    for option, allowed in EXPERIMENT_OPTIONS.items():
        if getattr(args, option) not in (None, False) and args.name not in allowed:
            raise AebonetError(f"--{option.replace('_', '-')} does not apply to the {args.name} experiment; "
                               f"it is for {' and '.join(allowed)}")


def start_experiment(args: argparse.Namespace):
    """Run the experiment named on the command line; return its table."""
    from . import experiments
    from .config import get_config

    preset = args.preset or "cpu"
    config = get_config(preset, image_size=args.size, width=args.width)
    common = {"source": args.data, "preset": preset, "config": config, "num_seeds": args.seeds, "out_dir": args.out,
              "pretrain_epochs": args.pretrain_epochs, "resume": args.resume}
    if args.name == "label-efficiency":
        return experiments.label_efficiency(**common, fractions=args.fractions, steps=args.steps, pretrain_run=args.pretrain)
    if args.name == "sex-input":
        return experiments.sex_input_experiment(**common, num_epochs=args.epochs, pretrain_run=args.pretrain)
    return experiments.decoder_experiment(**common, num_epochs=args.epochs)


def run_experiment(args: argparse.Namespace) -> int:
    """Run an experiment beyond the paper; print its table and the files written."""
    check_experiment_options(args)
    from . import experiments

    start = time.perf_counter()
    if args.name == "real":
        return run_real_experiment(args, start)
    table = start_experiment(args)
    print(experiments.format_table(table))
    print("\n".join(f"wrote {path}" for path in sorted(args.out.iterdir()) if path.is_file()))
    print(f"runs in {args.out / 'runs'}; {(time.perf_counter() - start) / 60:.1f} minutes")
    return 0


def run_real_experiment(args: argparse.Namespace, start: float) -> int:
    """Run (or resume) the real-data experiment in --out and print where its runs are."""
    from . import real

    if args.data == "phantom":
        raise AebonetError("the real experiment needs real radiographs: give --data with the RSNA folder "
                           "(such as ../shared/rsna_bone_age_256)")
    real.real_experiment(args.data, args.out, preset=args.preset or real.PRESET, num_seeds=args.seeds,
                         fractions=args.fractions, command=command_line(), part=args.part,
                         collect_only=args.collect_only)
    print(f"runs in {args.out / 'runs'}; {(time.perf_counter() - start) / 60:.1f} minutes")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Measure speed on this machine; write the JSON file and the Markdown table beside it."""
    from . import bench

    mode = "gpu" if args.gpu_check else "quick" if args.quick else "full"
    demo = None if args.demo is None else (args.demo or [None])
    result = bench.run(mode, args.out, demo=demo, gpu_json=args.gpu_json)
    print(bench.format_summary(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} in {result['seconds_total'] / 60:.1f} minutes")
    return 0


TENSORFLOW_COMMANDS = ("pretrain", "train", "evaluate", "predict", "demo", "experiment", "bench")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and look for GPUs with its C++ start-up log silenced (AEBONET_DEBUG=1 shows it).

    TensorFlow 2.21 prints a dozen lines at start-up (oneDNN notes, CPU instructions, a
    'failed call to cuInit' on machines without a GPU) that no environment variable turns
    off; they look like errors to a student and are not.
    """
    if os.environ.get("AEBONET_DEBUG") or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Run the `aebonet` command; bad input ends in one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in TENSORFLOW_COMMANDS:
            import_tensorflow_quietly()
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
