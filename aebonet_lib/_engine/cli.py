"""The `aebonet` command: one subcommand per step of the pipeline.

Each `run_*` function is a thin layer over library functions a chapter also calls;
the arguments are defined in `cli_parser`, which needs only the names of `options`, so
`--help` answers at once; every command but `phantom` then imports TensorFlow, quietly
(ARCHITECTURE.md, "Imports").
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
import time
import traceback

from aebonet_lib.errors import AebonetError


def check_overwrite(args: argparse.Namespace, *paths) -> None:
    """Refuse output files that already exist unless --force was given (None paths are skipped)."""
    from aebonet_lib._engine.files import refuse_overwrite

    refuse_overwrite(paths, args.force)


def evaluate_outputs(args: argparse.Namespace) -> list:
    """Return the files `evaluate` writes into a folder the user named with --out (none without --out)."""
    return [] if args.out is None else [args.out / "metrics.json", args.out / "predictions.csv"]


def run_phantom(args: argparse.Namespace) -> int:
    """Write a phantom dataset in the Kaggle layout (chapter 0)."""
    from aebonet_lib import phantom

    style = args.style or phantom.DEFAULT_STYLE
    if args.report:
        from aebonet_lib._engine import realism

        real = args.real or realism.REAL_256
        check_overwrite(args, args.report_out)
        return realism.report_main(args.n or 500, style, real, args.report_out)
    if args.out is None or args.n is None:
        raise AebonetError("give --out FOLDER and --n N to write phantoms (or --report to compare them with real images)")
    size = phantom.parse_size(args.size)
    out = phantom.write_dataset(args.out, n=args.n, size=size, seed=args.seed, label_noise_sd=args.label_noise,
                                style=style, variation=not args.no_variation)
    print(f"wrote {args.n} images and {phantom.LABELS_CSV} to {out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Check a dataset, build its preprocessing cache in --out, and print a summary."""
    from aebonet_lib.data import loading

    prepared = loading.load_data(
        args.data, args.size, seed=args.seed, split_kind=args.split, skip_bad=args.skip_bad, clahe=args.clahe,
        normalize=args.normalize, layout=args.layout, csv=args.csv, image_col=args.image_col, age_col=args.age_col,
        sex_col=args.sex_col, cache_dir=args.out, workers=args.workers, force=args.force,
        max_pixels=args.max_pixels)
    print(loading.describe(prepared))
    return 0


def command_line(args: argparse.Namespace) -> str:
    """Return the command as it was given (to `main` or on the shell), for a run's config.json."""
    return shlex.join(["aebonet", *args.argv])


def training_config(args: argparse.Namespace, batch_field: str):
    """Return the Config for `pretrain` or `train`: the run's own when resuming, else the preset with overrides."""
    from aebonet_lib._engine import checkpoints, records
    from aebonet_lib.config import get_config

    if args.resume and records.has_record(args.out):
        return checkpoints.saved_config(args.out)
    return get_config(args.preset, image_size=args.size, width=args.width, seed=args.seed, precision=args.precision,
                      jit=args.jit or None, deterministic=args.deterministic or None, split_kind=args.split,
                      **{batch_field: args.batch_size})


def load_training_data(args: argparse.Namespace, config):
    """Load --data at the config's image size, split as the config says (kind, fractions and seed)."""
    from aebonet_lib.data.loading import load_data

    return load_data(args.data, config.image_size, seed=config.seed, split=config.split,
                     split_kind=config.split_kind, skip_bad=args.skip_bad, phantom_n=config.phantom_n)


def check_out(args: argparse.Namespace, kind: str) -> bool:
    """Refuse an --out holding another run, on the process that writes it; return False on a non-chief worker.

    With --distribute multiworker only the chief (task 0) writes --out; the others train
    in a temporary folder, so --out (on a shared disk, maybe the chief's) is not theirs to check.
    """
    from aebonet_lib._engine import checkpoints, devices

    if not devices.is_chief(args.distribute):
        return False
    checkpoints.check_run_dir(args.out, args.resume, kind)
    return True


def worker_done(args: argparse.Namespace) -> int:
    """Say that a non-chief worker has finished, and where the chief wrote the run."""
    from aebonet_lib._engine import devices

    task_type, index = devices.worker_task()
    print(f"{task_type} {index} finished; the chief writes the run folder {args.out} on its machine")
    return 0


def finished_before(args: argparse.Namespace, what: str) -> bool:
    """Return True, and say so, when --resume names a run that has already finished (pretraining or training)."""
    from aebonet_lib._engine import checkpoints

    if args.resume and checkpoints.run_finished(args.out):
        print(f"{args.out}: this {what} run has already finished; nothing to do")
        return True
    return False


def run_pretrain(args: argparse.Namespace) -> int:
    """Pretrain the autoencoder in stages, writing RUN/encoder.keras."""
    from aebonet_lib._engine import runner as training

    chief = check_out(args, "pretrain")
    if finished_before(args, "pretraining"):
        return 0
    config = training_config(args, "ae_batch_size").replace(decoder=args.decoder, objective=args.objective)
    data = load_training_data(args, config)
    run_dir = training.pretrain(data, config, args.out, num_epochs=args.epochs, resume=args.resume,
                                distribute=args.distribute, command=command_line(args), budget=args.budget)
    if not chief:
        return worker_done(args)
    print(f"wrote {run_dir / 'encoder.keras'} (stages: {run_dir / 'stages.csv'})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Fine-tune a regressor, writing RUN/model.keras."""
    from aebonet_lib._engine import modelfiles
    from aebonet_lib._engine import runner as training

    chief = check_out(args, "train")
    if finished_before(args, "training"):
        return 0
    backbone = args.backbone or ("aebonet" if args.encoder else "scratch")
    print(training.backbone_summary(args.out, backbone, args.encoder, args.weights), flush=True)
    config = training_config(args, "reg_batch_size")
    data = load_training_data(args, config)
    run_dir = training.train(data, config, args.out, backbone=backbone, encoder=args.encoder, weights=args.weights,
                             sex_input=args.sex_input, num_epochs=args.epochs, resume=args.resume,
                             distribute=args.distribute, freeze_epochs=args.freeze_epochs, command=command_line(args),
                             budget=args.budget)
    if not chief:
        return worker_done(args)
    meta = modelfiles.read_model_meta(run_dir / "model.keras")
    kept = f"the last epoch, {meta.epochs_done}" if meta.keep == "last" else f"the best epoch, {meta.best_epoch}"
    print(f"wrote {run_dir / 'model.keras'} (kept {kept}; best validation MAE {meta.best_val_mae:.2f} months "
          f"at epoch {meta.best_epoch})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Print MAE and MSE with 95% intervals, write metrics.json and predictions.csv, warn of flagged images."""
    from aebonet_lib._engine import predict, trust

    check_overwrite(args, *evaluate_outputs(args))
    model = predict.resolve_model(args.model)
    data = predict.load_data_for_model(model, args.data, skip_bad=args.skip_bad)
    result = predict.evaluate(model, data, split=args.split, out_dir=args.out)
    out_dir = args.out or model.parent
    print(predict.format_metrics(result))
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'predictions.csv'}")
    if result.get("ci95_note"):  # one line each on stderr: stdout stays the report
        print(f"warning: {result['ci95_note']}", file=sys.stderr)
    summary = trust.counts_summary(result)
    if summary:
        print(summary, file=sys.stderr)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Print (or write with --out) predicted bone ages and flags as CSV; warn on stderr of flagged and skipped images."""
    from aebonet_lib._engine import predict, trust
    from aebonet_lib._engine.files import atomic_write

    check_overwrite(args, args.out)
    note = predict.ignored_sex_note(args.model, args.sex, args.sex_from)
    if note:
        print(note, file=sys.stderr)
    table = predict.predict_images(args.model, args.images, sex=args.sex, sex_from=args.sex_from,
                                   skip_bad=args.skip_bad, max_pixels=args.max_pixels)
    if args.out is None:
        predict.write_predictions(sys.stdout, table, args.model)
    else:
        with atomic_write(args.out) as f:
            predict.write_predictions(f, table, args.model)
        print(f"wrote {len(table)} predictions to {args.out}")
    for warning in (predict.report_skipped(table, args.out), trust.flag_summary(table)):
        if warning:  # one line each on stderr: the CSV on stdout stays clean
            print(warning, file=sys.stderr)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Run the whole pipeline on the phantom and print the comparison table."""
    from aebonet_lib._engine import demo

    start = time.perf_counter()
    table = demo.demo(args.out, seed=args.seed, precision=args.precision, resume=args.resume)
    print(demo.format_comparison(table))
    print(f"wrote the runs and comparison.csv to {args.out} in {(time.perf_counter() - start) / 60:.1f} minutes")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Write the tables (CSV, Markdown) and figures (PNG) for finished runs, and list the files written."""
    from aebonet_lib._engine import report

    written = report.report(args.runs, args.out)
    print("\n".join(f"wrote {path}" for path in written))
    return 0


EXPERIMENT_OPTIONS = {"fractions": ("label-efficiency", "label-grid", "real"), "part": ("real", "best-cpu"),
                      "collect_only": ("real",), "steps": ("label-efficiency", "label-grid"),
                      "encoder": ("label-efficiency",),
                      "epochs": ("sex-input", "decoder"), "pretrain": ("label-efficiency", "sex-input"),
                      "pretrain_epochs": ("label-efficiency", "sex-input", "decoder"),
                      "size": ("label-efficiency", "label-grid", "sex-input", "decoder"),
                      "width": ("label-efficiency", "label-grid", "sex-input", "decoder"),
                      "stage": ("label-grid",), "methods": ("label-grid",), "collect": ("label-grid",)}


def check_experiment_options(args: argparse.Namespace) -> None:
    """Refuse an option that the chosen experiment does not take, and --encoder with --pretrain."""
    if getattr(args, "encoder", None) and args.pretrain:
        raise AebonetError("--encoder and --pretrain: give one (an encoder pretrained elsewhere, or a run to pretrain in)")
    for option, allowed in EXPERIMENT_OPTIONS.items():
        if getattr(args, option) not in (None, False) and args.name not in allowed:
            raise AebonetError(f"--{option.replace('_', '-')} does not apply to the {args.name} experiment; "
                               f"it is for {' and '.join(allowed)}")


def start_experiment(args: argparse.Namespace):
    """Run the experiment named on the command line; return its table."""
    from aebonet_lib.config import get_config
    from aebonet_lib.experiments import studies

    preset = args.preset or "cpu"
    config = get_config(preset, image_size=args.size, width=args.width)
    common = {"source": args.data, "preset": preset, "config": config, "num_seeds": args.seeds, "out_dir": args.out,
              "pretrain_epochs": args.pretrain_epochs, "resume": args.resume}
    if args.name == "label-efficiency":
        return studies.label_efficiency(**common, fractions=args.fractions, steps=args.steps, pretrain_run=args.pretrain,
                                        encoder=args.encoder)
    if args.name == "sex-input":
        return studies.sex_input_experiment(**common, num_epochs=args.epochs, pretrain_run=args.pretrain)
    return studies.decoder_experiment(**common, num_epochs=args.epochs)


def run_experiment(args: argparse.Namespace) -> int:
    """Run an experiment beyond the paper; print its table and the files written."""
    check_experiment_options(args)
    from aebonet_lib.experiments import protocol

    start = time.perf_counter()
    if args.name == "real":
        return run_real_experiment(args, start)
    if args.name == "label-grid":
        return run_label_grid(args, start)
    if args.name == "best-cpu":
        return run_best_cpu(args, start)
    table = start_experiment(args)
    print(protocol.format_table(table))
    print("\n".join(f"wrote {path}" for path in sorted(args.out.iterdir()) if path.is_file()))
    print(f"runs in {args.out / 'runs'}; {(time.perf_counter() - start) / 60:.1f} minutes")
    return 0


def run_real_experiment(args: argparse.Namespace, start: float) -> int:
    """Run (or resume) the real-data experiment in --out and print where its runs are."""
    from aebonet_lib._engine import real

    if args.data == "phantom":
        raise AebonetError("the real experiment needs real radiographs: give --data with the RSNA folder "
                           "(such as ../shared/rsna_bone_age_256)")
    real.real_experiment(args.data, args.out, preset=args.preset or real.PRESET, num_seeds=args.seeds,
                         fractions=args.fractions, command=command_line(args), part=args.part,
                         collect_only=args.collect_only)
    print(f"runs in {args.out / 'runs'}; {(time.perf_counter() - start) / 60:.1f} minutes")
    return 0


def run_best_cpu(args: argparse.Namespace, start: float) -> int:
    """Train (or resume) the best-CPU candidates in --out; without --part, choose the winner and test it."""
    from aebonet_lib._engine import best_cpu

    if args.data == "phantom" or args.preset not in (None, best_cpu.PRESET):
        raise AebonetError(f"the best-cpu experiment needs real radiographs at its own preset ({best_cpu.PRESET}): "
                           "give --data with the RSNA folder (such as ../shared/rsna_bone_age_256) and no --preset")
    results = best_cpu.best_cpu(args.data, args.out, part=args.part, command=command_line(args))
    print(f"runs in {args.out / 'runs'}" + (f"; results in {results}" if results else "")
          + f"; {(time.perf_counter() - start) / 60:.1f} minutes")
    return 0


def run_label_grid(args: argparse.Namespace, start: float) -> int:
    """Run (or resume) the label-efficiency grid in --out; with --collect, write its tables there."""
    from aebonet_lib._engine import grid, grid_results
    from aebonet_lib.config import get_config
    from aebonet_lib.data.loading import load_data

    preset = args.preset or "cpu"
    config = get_config(preset, image_size=args.size, width=args.width)
    plan = grid.get_plan(preset, num_seeds=args.seeds, fractions=args.fractions, steps=args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.collect is None or args.stage is not None:
        data = load_data(args.data, config.image_size, seed=config.seed, split=config.split,
                         phantom_n=config.phantom_n, progress=False)
        grid.label_grid(data, config, plan, args.out, args.stage or "all", args.methods,
                        log=lambda line: print(f"{time.strftime('%H:%M:%S')} {line}", flush=True))
    if args.collect is not None:
        runs = grid_results.collect(args.out, args.collect)
        print(f"collected {len(runs)} rows into {args.collect}")
    print(f"grid in {args.out}; {(time.perf_counter() - start) / 60:.1f} minutes")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Measure speed on this machine; write the JSON file and the Markdown table beside it."""
    from aebonet_lib._engine.bench import markdown, measure

    mode = "gpu" if args.gpu_check else "quick" if args.quick else "full"
    demo = None if args.demo is None else (args.demo or [None])
    check_overwrite(args, args.out, args.out.with_suffix(".md"))
    result = measure.run(mode, args.out, demo=demo, gpu_json=args.gpu_json)
    print(markdown.format_summary(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} in {result['seconds_total'] / 60:.1f} minutes")
    return 0


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


OS_ERRORS = {  # errno -> what happened, and what to do: a user's file system, not a bug
    errno.EACCES: ("permission denied", "choose a path you may write (and read), or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a path you may write (and read), or change its permissions"),
    errno.EISDIR: ("is a folder where a file is expected", "give a file path"),
    errno.ENOTDIR: ("part of this path is a file, not a folder", "choose another path, or move that file away"),
    errno.EEXIST: ("already exists", "remove it or choose another path"),
    errno.ENOSPC: ("no space left on the disk", "free some space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write to another disk"),
    errno.EROFS: ("read-only file system", "write to another disk"),
}


ERRNO_OF = {PermissionError: errno.EACCES, IsADirectoryError: errno.EISDIR, NotADirectoryError: errno.ENOTDIR,
            FileExistsError: errno.EEXIST}  # for such errors raised without an errno


def os_error_message(e: OSError) -> str | None:
    """Return one line for an OSError that a user can fix (permissions, a full disk, a file for a folder), else None."""
    code = e.errno if e.errno in OS_ERRORS else ERRNO_OF.get(type(e))
    if code is None:
        return None
    what, fix = OS_ERRORS[code]
    where = e.filename if e.filename is not None else "a file"
    return f"{where}: {what}; {fix}"


COMMANDS = {"phantom": run_phantom, "prepare": run_prepare, "pretrain": run_pretrain, "train": run_train,
            "evaluate": run_evaluate, "predict": run_predict, "demo": run_demo, "report": run_report,
            "experiment": run_experiment, "bench": run_bench}


def main(argv: list[str] | None = None) -> int:
    """Run the `aebonet` command; bad input ends in one line on stderr and exit status 2."""
    from aebonet_lib._engine.cli_parser import build_parser

    args = build_parser().parse_args(argv)  # --help and a usage error end here, before TensorFlow starts
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command != "phantom":
        import_tensorflow_quietly()  # every other command reaches Keras (the presets come from the recipe)
    try:
        return COMMANDS[args.command](args) or 0
    except AebonetError as e:
        print(f"aebonet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aebonet {args.command}: interrupted; rerun with --resume where the command has it", file=sys.stderr)
        return 130
    except OSError as e:
        message = os_error_message(e)
        if message is None:
            return internal_error(args.command, e)
        print(f"aebonet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not bad input: one line, the traceback on request
        return internal_error(args.command, e)


def internal_error(command: str, e: Exception) -> int:
    """Report a bug in one line (the traceback with AEBONET_DEBUG=1); return exit status 1."""
    if os.environ.get("AEBONET_DEBUG"):
        traceback.print_exc()
    else:
        print(f"aebonet {command}: internal error: {type(e).__name__}: {e} "
              "(set AEBONET_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
