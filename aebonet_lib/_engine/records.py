"""What a run folder records about itself (RUN/config.json): one dataclass, read and written here only."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from aebonet_lib._engine.files import read_json, write_json
from aebonet_lib.config import Config
from aebonet_lib.errors import AebonetError

RECORD_FILE = "config.json"
KINDS = ("pretrain", "train")


@dataclass
class RunRecord:
    """Hold what a run was started with: its kind, recipe, data and command; a regressor's backbone and label scale."""

    kind: str  # "pretrain" (the autoencoder) or "train" (a regressor)
    config: Config
    data: str  # the data source: phantom[:N] or an absolute path
    command: str | None = None  # the command line that started the run
    plan: list[int] = field(default_factory=list)  # pretrain: the epochs of each stage
    backbone: str | None = None  # train: aebonet, scratch or a baseline
    weights: str | None = None  # train, baselines: imagenet, a file, or None
    encoder: str | None = None  # train, aebonet: the pretrained RUN/encoder.keras (absolute path)
    sex_input: bool = False
    y_mean: float = 0.0  # train: the training ages' mean and SD (months), for config.scale_output
    y_std: float = 1.0
    num_epochs: int = 0  # train: regressor epochs
    freeze_epochs: int = 0  # train: epochs with the backbone frozen first
    budget: dict | None = None  # --budget: _engine.budget.Budget's plan (measured rate, planned epochs), followed on resume
    commit: str | None = None  # the commit of the code that started the run (git_state), None outside git
    dirty: bool | None = None  # whether that checkout's tracked files had uncommitted changes

    def to_dict(self) -> dict:
        """Return the record as config.json holds it (the Config as a dict)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {"config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        """Rebuild a record from config.json's dict, ignoring fields this version does not know."""
        if d.get("kind") not in KINDS:
            raise AebonetError(f"config.json of kind {d.get('kind')!r}: not a run record; expected one of {KINDS}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known and v is not None}
        return cls(**(values | {"config": Config.from_dict(d["config"])}))


def has_record(run_dir: str | Path) -> bool:
    """Return True when `run_dir` holds a run (its config.json)."""
    return (Path(run_dir) / RECORD_FILE).is_file()


def read_record(run_dir: str | Path) -> RunRecord | None:
    """Return the record of the run in `run_dir`, or None when there is none yet."""
    return RunRecord.from_dict(read_json(Path(run_dir) / RECORD_FILE)) if has_record(run_dir) else None


def write_record(run_dir: str | Path, record: RunRecord) -> None:
    """Write the run's record as RUN/config.json, atomically."""
    write_json(Path(run_dir) / RECORD_FILE, record.to_dict())


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """Return the commit of the checkout this process's library came from, and whether its tracked files differed.

    Read once, at the first call (`label_grid` makes it before anything trains), so that a checkout
    updated while a long run goes on does not relabel what the older code makes. Every run records it.
    """
    here = Path(__file__).parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}
