"""Tests of aebonet_lib._engine.bench and aebonet_lib._engine.hardware: the report's structure, FLOP accounting, targets, detection.

No timed assertions: speed is what `aebonet bench` measures, not what a test checks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aebonet_lib import paper
from aebonet_lib._engine import flops as measures
from aebonet_lib._engine import hardware
from aebonet_lib._engine.bench import estimates, measure, plans
from aebonet_lib._engine.cli_parser import build_parser
from aebonet_lib.config import get_config
from aebonet_lib.errors import AebonetError

FAKE_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16
"""

TINY_CASE = plans.TrainCase("autoencoder", 32, 0.125, "upsample_conv", "fp32", False, batch_size=2, steps=1,
                            warmup=1, repeats=1)


def tiny_plan(training=(TINY_CASE,)) -> plans.Plan:
    """Return a plan of the smallest sizes: tiny peaks, 4 small PNGs, one 32-px training case, one latency."""
    return plans.Plan("tiny", 1, ("fp32",), 64, 1, 0.0, (((64, 64), 2),), (96, 80), 4, (1,), 32, (2,), 6,
                      tuple(training), (plans.LatencyCase(32, 0.125, "fp32", False, 1, repeats=1),),
                      conv_shapes=((8, 8, 8), (4, 4, 16)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the tiny plan once; return the result and the JSON path."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    return measure.run(out=out, plan=tiny_plan(), progress=False), out


# --- hardware ------------------------------------------------------------------------------


def test_parse_cpuinfo_reads_model_flags_and_cpus():
    info = hardware.parse_cpuinfo(FAKE_CPUINFO)
    assert info["model"] == "AMD EPYC 9R14 96-Core Processor"
    assert info["logical_cpus"] == 2
    assert "avx512_bf16" in info["flags"] and "amx_bf16" not in info["flags"]


def test_parse_meminfo_in_gib():
    assert hardware.parse_meminfo("MemTotal:       16777216 kB\nMemFree: 1 kB\n") == 16.0
    assert hardware.parse_meminfo("") is None


@pytest.mark.parametrize("gpus, flags, width, expected", [
    ([{"name": "H100", "compute_capability": [9, 0]}], [], 0.25, "bf16"),
    ([{"name": "A100", "compute_capability": [8, 0]}], [], None, "bf16"),
    ([{"name": "T4", "compute_capability": [7, 5]}], ["amx_bf16"], 1.0, "fp16"),
    ([{"name": "P100", "compute_capability": [6, 0]}], ["amx_bf16"], 1.0, "fp32"),
    ([], ["avx512f", "amx_tile", "amx_bf16"], 0.25, "fp32"),  # the cpu preset on AMX: bf16 measured 0.72x
    ([], ["avx512f", "amx_tile", "amx_bf16"], None, "fp32"),
    ([], ["avx512f", "amx_tile", "amx_bf16"], 1.0, "bf16"),
    ([], hardware.parse_cpuinfo(FAKE_CPUINFO)["flags"], 1.0, "bf16"),  # AVX512-BF16, full width: 1.8-2x measured
    ([], hardware.parse_cpuinfo(FAKE_CPUINFO)["flags"], 0.25, "fp32"),  # the cpu preset gains nothing
    ([], ["avx2", "fma", "avx512f"], 1.0, "fp32"),
])
def test_best_precision_follows_the_measurements(gpus, flags, width, expected):
    assert hardware.best_precision(gpus, flags, width) == expected


def test_auto_precision_is_fp32_for_the_cpu_preset_on_any_cpu(monkeypatch):
    from aebonet_lib._engine import devices
    from aebonet_lib.config import get_config

    monkeypatch.setattr(hardware, "gpu_info", lambda: [])
    for flags in (["avx512f", "amx_tile", "amx_bf16"], ["avx512_bf16"], ["avx2"]):
        monkeypatch.setattr(hardware, "cpu_info", lambda flags=flags: {"flags": flags})
        assert devices.resolve_precision(get_config("cpu")).precision == "fp32"


def test_describe_this_machine_agrees_with_the_operating_system():
    info = hardware.describe_machine()
    assert info["available_cpus"] == len(os.sched_getaffinity(0))
    assert info["logical_cpus"] == (hardware.parse_cpuinfo(Path("/proc/cpuinfo").read_text())["logical_cpus"]
                                    or os.cpu_count())
    flags_line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    flags = set(flags_line.split(":", 1)[1].split())
    assert info["cpu_flags"] == {flag: flag in flags for flag in hardware.CPU_FLAGS}
    total_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    assert info["memory_gib"] == pytest.approx(total_kib / 2**20, rel=0.01)
    assert info["best_precision"] == hardware.best_precision(info["gpus"], sorted(f for f, on in info["cpu_flags"].items() if on))


# --- FLOP accounting and the estimate --------------------------------------------------------


def test_training_row_counts_three_forward_passes():
    row, = measure.measure_training([TINY_CASE])
    plans.fresh_keras()
    forward = measures.count_flops(paper.build_autoencoder(TINY_CASE.config()))
    assert row["forward_gflop_per_image"] == pytest.approx(forward / 1e9)
    assert row["train_gflops"] == pytest.approx(3 * forward * row["images_per_s"] / 1e9)
    assert row["images_per_s"] > 0 and len(row["seconds"]) == TINY_CASE.repeats


def test_schedule_flops_follow_the_paper_split_and_epochs():
    paper = get_config("paper")
    phases = estimates.schedule_flops({"autoencoder": 1, "regressor": 2}, paper)
    assert phases["autoencoder"] == paper.ae_num_epochs * (10088 * 3 + 2323)
    assert phases["regressor"] == paper.reg_num_epochs * (10088 * 3 + 2323) * 2


@pytest.mark.parametrize("name, label", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA A100-SXM4-80GB", "A100"), ("Tesla T4", None),
])
def test_published_peak_matches_gpu_names(name, label):
    peak = estimates.published_peak(name)
    assert (peak[0] if peak else None) == label


def gpu_row(task: str, batch_size: int, gflops: float) -> dict:
    """Return a fake training row of the paper's model measured on an H100 in bf16."""
    return {"task": task, "image_size": 256, "width": 1.0, "decoder": "upsample_conv", "precision": "bf16",
            "jit": True, "batch_size": batch_size, "device": "GPU: NVIDIA H100 80GB HBM3", "train_gflops": gflops}


def test_estimate_uses_the_measured_gpu_utilisation():
    flops = {"autoencoder": 48.5e9, "regressor": 9.7e9}
    training = [gpu_row("autoencoder", 8, 494_700.0), gpu_row("autoencoder", 64, 900_000.0), gpu_row("regressor", 16, 98_940.0)]
    estimate = estimates.estimate_schedule(training, flops)
    measured, h100 = estimate["rows"][0], estimate["rows"][1]
    assert measured["kind"] == "measured rate" and "H100" in measured["what"]
    assert h100["utilisation"]["autoencoder"] == pytest.approx(0.5)  # the paper's batch 8, not the faster batch 64
    assert h100["utilisation"]["regressor"] == pytest.approx(0.1)
    phases = estimates.schedule_flops(flops, get_config("paper"))
    assert measured["autoencoder"] == pytest.approx(phases["autoencoder"] / 494_700e9 / 3600)
    assert h100["total"] == pytest.approx(measured["total"])  # the same GPU at its own measured utilisation


def test_estimate_without_a_gpu_states_its_assumption():
    estimate = estimates.estimate_schedule([], {"autoencoder": 48.5e9, "regressor": 9.7e9})
    assert all("assumed" in row["kind"] for row in estimate["rows"])
    assert {row["utilisation"]["autoencoder"] for row in estimate["rows"]} == set(plans.ASSUMED_UTILISATION)


# --- targets ------------------------------------------------------------------------------


def test_targets_pass_and_miss_with_margins():
    training = [{"label": "ae", "task": "autoencoder", "image_size": 256, "fraction_of_conv_peak": 0.4}]
    pipeline = [{"size": 256, "augment": False, "batch_size": 8, "images_per_s": 3000.0},
                {"size": 256, "augment": False, "batch_size": 16, "images_per_s": 5000.0},
                {"size": 256, "augment": True, "batch_size": 8, "images_per_s": 100.0}]
    demo = [{"command": "aebonet demo", "wall_s": 450.0}]
    peak, feed, wall = estimates.check_targets({"training": training, "pipeline": pipeline, "demo": demo})
    assert (peak["status"], peak["margin"]) == ("miss", pytest.approx(-0.2))
    assert (feed["status"], feed["measured"], feed["margin"]) == ("pass", 3000.0, pytest.approx(0.5))
    assert (wall["status"], wall["margin"]) == ("pass", pytest.approx(0.25))


def test_targets_not_measured():
    assert {t["status"] for t in estimates.check_targets({"training": [], "pipeline": [], "demo": []})} == {"not measured"}


# --- a whole (tiny) run ----------------------------------------------------------------------


def test_run_writes_json_and_markdown(tiny_run):
    result, out = tiny_run
    saved = json.loads(out.read_text())
    assert saved["mode"] == "tiny" and saved["hardware"]["available_cpus"] >= 1
    assert saved["command"] == f"aebonet bench '(plan tiny)' --out {out}"
    for section in ("peaks", "phantom", "cache", "pipeline", "training", "inference"):
        assert saved[section], section
        assert not [row for row in saved[section] if "error" in row], section
    assert saved["demo"] == []
    assert [t["status"] for t in saved["targets"]] == ["not measured"] * 3  # no 256 px training, demo not run
    markdown = out.with_suffix(".md").read_text()
    for heading in ("## Machine", "## The machine's own limit", "## Training throughput", "## Inference latency",
                    "## The paper's full schedule (estimate)", "## Targets", "3x the forward FLOPs"):
        assert heading in markdown


def test_run_rows_say_what_was_run(tiny_run):
    result, _ = tiny_run
    row = result["training"][0]
    assert (row["task"], row["image_size"], row["precision"], row["batch_size"], row["steps"]) == ("autoencoder", 32, "fp32", 2, 1)
    convs = [r for r in result["peaks"] if r["op"] == "conv"]
    assert len(convs) == 2
    assert row["fraction_of_conv_peak"] == pytest.approx(row["train_gflops"] / max(r["gflops"] for r in convs))
    assert convs[0]["gflop_per_call"] == pytest.approx(2 * 8 * 8 * 9 * 8 * 8 / 1e9)  # batch 1, 8x8 pixels, 8 channels
    pipeline = result["pipeline"]
    assert {(r["batch_size"], r["augment"], r["images"]) for r in pipeline} == {(2, False, 6), (2, True, 6)}


def test_a_failed_measurement_becomes_a_row():
    bad_case = plans.TrainCase("autoencoder", 16, 0.125, "upsample_conv", "fp32", False, batch_size=2, steps=1)
    good, bad = measure.run_job(measure.Job("training", "a group", lambda: measure.measure_training([TINY_CASE, bad_case])))
    assert "error" not in good and good["images_per_s"] > 0
    assert bad["label"] == measure.case_label(bad_case) and "image_size 16" in bad["error"]
    broken, = measure.run_job(measure.Job("demo", "broken", lambda: 1 / 0))
    assert broken["label"] == "broken" and broken["error"].startswith("ZeroDivisionError")


def test_race_takes_turns():
    order = []
    setups = [(name, lambda name=name: plans.Contender(name, lambda: order.append(name), lambda s: {"n": len(s)}))
              for name in "ab"]
    rows = plans.race(setups, repeats=2)
    assert order == ["a", "b", "a", "b"]
    assert rows == [{"label": "a", "n": 2}, {"label": "b", "n": 2}]


def test_out_must_be_json(tmp_path):
    with pytest.raises(AebonetError, match=r"\.json"):
        measure.run(out=tmp_path / "bench.txt", plan=tiny_plan())


@pytest.mark.skipif(bool(hardware.gpu_info()), reason="this machine has a GPU")
def test_gpu_check_needs_a_gpu(tmp_path):
    with pytest.raises(AebonetError, match="sees no GPU"):
        measure.run("gpu", out=tmp_path / "bench.json")


def test_bench_options():
    parser = build_parser()
    assert parser.parse_args(["bench", "--quick", "--demo"]).demo == []
    assert parser.parse_args(["bench", "--gpu-check", "--demo", "fp32", "bf16"]).demo == ["fp32", "bf16"]
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--quick", "--gpu-check"])


def test_command_text_names_the_plan():
    plan = plans.make_plan("gpu", demo=[None, "bf16"])
    assert measure.command_text(plan, Path("b.json"), None) == "aebonet bench --gpu-check --out b.json --demo bf16"
    assert measure.command_text(plans.make_plan("full"), Path("b.json"), "g.json") == "aebonet bench --out b.json --gpu-json g.json"


def test_plans_are_well_formed():
    for mode in plans.PLANS:
        plan = plans.make_plan(mode, demo=[None])
        assert plan.demo == (None,) and plan.training and plan.latency
        for case in plan.training:
            case.config()  # every case is a valid recipe
    assert {c.precision for c in plans.make_plan("gpu").training} == {"fp32", "bf16", "fp16"}


@pytest.mark.parametrize("name, card", [("h200-keras-jax", "H200"), ("h100-keras-jax", "H100")])
def test_shipped_gpu_measurements_give_a_schedule(name, card):
    results = plans.measured_results(name)
    assert card in results["device"] and estimates.published_peak(results["device"])
    basis = estimates.measured_basis(results["training"], "GPU", "bf16")
    assert basis["autoencoder"]["batch_size"] == 8 and basis["regressor"]["task"] == "regressor"
    row = estimates.measured_estimate(basis, estimates.schedule_flops(estimates.paper_flops(), get_config("paper")), card)
    assert 1 < row["total"] < 3  # hours: the paper's schedule on one such card, from its measured rates
