"""Every hyper-parameter in one place: the paper's settings (from `paper.py`) and presets sized for a CPU.

The `paper` preset is the recipe of `paper.py`: the paper's numbers, and our choices where it is silent;
the `cpu` preset keeps the same architecture and recipe, shrunk so that a chapter
trains in a minute or two on a laptop. Chapter 3 of the book walks through it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from aebonet_lib import paper
from aebonet_lib.errors import AebonetError
from aebonet_lib.options import (  # noqa: F401 (re-exported)
    DECODERS,
    KEEP,
    LR_SCHEDULES,
    OBJECTIVES,
    PRECISIONS,
    SPLIT_KINDS,
)

# The paper's random split of the 12,611 RSNA training images (train / validation / test).
PAPER_SPLIT_SIZES = paper.SPLIT_SIZES
PAPER_SPLIT = tuple(n / sum(PAPER_SPLIT_SIZES) for n in PAPER_SPLIT_SIZES)


@dataclass(frozen=True)
class Config:
    """Hold one complete recipe: data size, architecture, both training phases."""

    name: str
    # Data
    image_size: int = paper.IMAGE_SIZE  # square input, pixels
    phantom_n: int = 12611  # images generated for `--data phantom`
    split: tuple[float, float, float] = PAPER_SPLIT  # train / val / test fractions
    split_kind: str = "paper"  # one of SPLIT_KINDS; "official" ignores the fractions
    augment: bool = False  # the paper describes none
    # Architecture (paper.py)
    filters: tuple[int, ...] = paper.ENCODER_FILTERS  # encoder blocks
    bottleneck: int = paper.BOTTLENECK
    width: float = 1.0  # multiplier on every filter count
    decoder: str = "upsample_conv"  # our choice (decoder upsampling): upsample, then convolve
    bn_momentum: float = 0.99  # our choice (batch-norm momentum): Keras's default
    dense_units: int = paper.DENSE_UNITS
    l2: float = paper.L2
    # Autoencoder pretraining (paper.py: five stages, 900 epochs)
    objective: str = "autoencoder"  # "masked": hide half the patches of each training image (beyond the paper)
    ae_stages: tuple[int, ...] = paper.AE_STAGES
    ae_batch_size: int = paper.AE_BATCH_SIZE
    ae_lr: float = paper.AE_LR
    # Regressor fine-tuning (paper.py)
    reg_num_epochs: int = paper.REG_NUM_EPOCHS  # our choice (regressor epochs): the paper gives no count
    reg_batch_size: int = paper.REG_BATCH_SIZE
    reg_lr: float = paper.REG_LR
    freeze_epochs: int = 0  # epochs with the encoder frozen before fine-tuning it
    scale_output: bool = False  # learn age in SD units around the training mean (not in the paper)
    early_stopping_patience: int = 0  # stop after this many epochs without a better val MAE (0: off)
    reduce_lr_patience: int = 0  # multiply the learning rate by reduce_lr_factor after this many flat epochs (0: off)
    reduce_lr_factor: float = 0.5
    lr_schedule: str = "constant"  # the paper's constant Adam rate; "cosine": decay to 0 over the epochs (our choice)
    keep: str = "best"  # which epoch's regressor to keep: "best" validation MAE, or "last" (val never steers training)
    # Speed
    precision: str = "auto"  # resolved by hardware.best_precision() when a run starts
    jit: bool = False
    seed: int = 0
    deterministic: bool = False  # TensorFlow op determinism: same seed, same numbers (slower)

    def replace(self, **changes) -> "Config":
        """Return a copy with some fields changed (None values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise AebonetError(f"unknown config field(s) {sorted(unknown)}; known: {sorted(self.to_dict())}")
        return dataclasses.replace(self, **changes)  # __post_init__ checks the copy

    def __post_init__(self) -> None:
        """Refuse a Config with a field out of range, however it was built (a preset, replace, from_dict)."""
        self.check()

    def check(self) -> None:
        """Raise AebonetError when a field is out of range."""
        if self.image_size < 32:
            raise AebonetError(f"image_size {self.image_size}: must be at least 32 (four 2x poolings; sizes such as "
                               "450 are padded to a multiple of 16, paper.CHOICES)")
        if not 0 < self.width <= 4:
            raise AebonetError(f"width {self.width}: must be in (0, 4]")
        if self.decoder not in DECODERS:
            raise AebonetError(f"decoder {self.decoder!r}: choose one of {', '.join(DECODERS)}")
        if self.objective not in OBJECTIVES:
            raise AebonetError(f"objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise AebonetError(f"lr_schedule {self.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
        if self.keep not in KEEP:
            raise AebonetError(f"keep {self.keep!r}: choose one of {', '.join(KEEP)}")
        if self.precision not in PRECISIONS:
            raise AebonetError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.split_kind not in SPLIT_KINDS:
            raise AebonetError(f"split_kind {self.split_kind!r}: choose one of {', '.join(SPLIT_KINDS)}")
        if len(self.split) != 3 or abs(sum(self.split) - 1) > 1e-6 or min(self.split) <= 0:
            raise AebonetError(f"split {self.split}: three positive fractions that sum to 1")
        counts = {"ae_batch_size": self.ae_batch_size, "reg_batch_size": self.reg_batch_size,
                  "phantom_n": self.phantom_n, "dense_units": self.dense_units, "bottleneck": self.bottleneck}
        for name, value in counts.items():
            if value < 1 or value != int(value):
                raise AebonetError(f"{name} {value!r}: must be a whole number of at least 1")
        if not self.ae_stages or min(self.ae_stages) < 0 or not self.filters or min(self.filters) < 1:
            raise AebonetError(f"ae_stages {self.ae_stages} and filters {self.filters}: non-empty, epochs >= 0, filters >= 1")
        if min(self.reg_num_epochs, self.freeze_epochs, self.early_stopping_patience, self.reduce_lr_patience) < 0:
            raise AebonetError("reg_num_epochs, freeze_epochs and the patiences must be 0 or more")
        if not 0 < self.reduce_lr_factor < 1:
            raise AebonetError(f"reduce_lr_factor {self.reduce_lr_factor}: must be between 0 and 1")

    @property
    def ae_num_epochs(self) -> int:
        """Total autoencoder epochs over all stages."""
        return sum(self.ae_stages)

    def scaled_filters(self) -> tuple[int, ...]:
        """Return the encoder's filter counts (blocks, then bottleneck) after the width multiplier."""
        return tuple(max(1, round(f * self.width)) for f in (*self.filters, self.bottleneck))

    def to_dict(self) -> dict:
        """Return the fields as a JSON-friendly dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Rebuild a Config saved with `to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})


PRESETS: dict[str, Config] = {
    "paper": Config(name="paper"),
    # phantom_n and reg_num_epochs: 3,000 phantoms for 8 epochs (about 1,050 steps), not 1,500 for 15 (the same
    # steps), because on 1,500 the control from scratch learnt nothing in those steps: test MAE 34.8 (31.5-38.2)
    # against 34.6 for predicting the median; on 3,000 it scores 28.0 (26.0-30.1) against 32.6, and AE-BoNet
    # 20.0 (18.6-21.5) (seed 0, measured 2026-12-07 on this course's 2-core CPU).
    "cpu": Config(
        name="cpu",
        image_size=64,
        phantom_n=3000,
        split=(0.7, 0.15, 0.15),
        width=0.25,
        ae_stages=(2, 2, 1, 1, 1),
        ae_batch_size=16,
        reg_num_epochs=8,
        reg_batch_size=16,
        reduce_lr_patience=2,
        scale_output=True,
        bn_momentum=0.9,  # short schedules: moving statistics must settle within a few hundred steps
    ),
    # Real radiographs on a 2-core CPU (`aebonet experiment real`): the paper's split and recipe at
    # the largest resolution a CPU trains in about 10 minutes per regressor. Measured on this
    # course's 2-core Xeon: 128 px at width 0.125 trains the regressor at about 340 images/s
    # (30 s per epoch over 10,088 images) and the autoencoder at 100 images/s; 128 px at width
    # 0.25 is half as fast, 96 px at width 0.25 as fast but with 2.8x fewer pixels.
    # The validation split never steers training (cosine decay, last epoch kept), so that
    # its 2,323 images are a second, larger test set.
    "rsna-cpu": Config(
        name="rsna-cpu",
        image_size=128,
        phantom_n=3000,
        width=0.125,
        ae_stages=(2, 2, 1, 1, 1),
        ae_batch_size=16,
        reg_num_epochs=20,
        reg_batch_size=16,
        scale_output=True,
        lr_schedule="cosine",
        keep="last",
    ),
}


# Real radiographs in a class (AEBONET_PRESET=rsna-class): the rsna-cpu recipe at 64 px, four times
# fewer pixels, so that a chapter runs on the RSNA radiographs in a class period on a 2-core CPU
# (rsna-cpu takes about 25 minutes to pretrain alone). Coarser: a finger's growth plate is a pixel.
PRESETS["rsna-class"] = PRESETS["rsna-cpu"].replace(name="rsna-class", image_size=64)

# A class on a GPU (`--preset colab`): the paper's model exactly (256 px, width 1, its filters, batches 8 and
# 16, Adam 1e-3), its whole real-data run (pretraining, then fine-tuning, on the 10,088 training images) sized
# to end within an hour on Colab's free T4. Why each number (_engine.budget.estimate, chapter 5's table):
# - ae_stages: Table 2's 300:200:100:150:150 divided by 50, so the stages keep the paper's proportions; 18
#   epochs are about 40 minutes on a T4 at the slow end of the estimate (the H100's measured 1,363 fp16
#   images/s divided by the T4's datasheet ratio: 15x fewer TFLOP/s).
# - reg_num_epochs: 10, where the paper's Figure 3 curves settle; about 10 minutes on a T4 (slow end).
# - scale_output, cosine decay, keep the last epoch: the rsna-cpu recipe for short runs (validation never
#   steers training, so its 2,323 images are a second test set).
# - jit: the rates it is sized from were measured with XLA (Keras 3 on JAX), which is also Keras's own
#   default on a TensorFlow GPU. precision stays "auto": fp16 on a T4, bf16 on an L4, A100 or H100.
# Estimates until measured on a T4; `--budget MINUTES` measures the first steps and cuts epochs to fit.
PRESETS["colab"] = Config(
    name="colab",
    ae_stages=(6, 4, 2, 3, 3),
    reg_num_epochs=10,
    scale_output=True,
    lr_schedule="cosine",
    keep="last",
    jit=True,
)


def get_config(preset: str = "cpu", **overrides) -> Config:
    """Return a preset (options.PRESET_NAMES: paper, cpu, rsna-cpu, rsna-class, colab), with any fields overridden."""
    if preset not in PRESETS:
        raise AebonetError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[preset].replace(**overrides)
