"""Train, load and evaluate models: the run folder around the recipe (chapters 3-6).

`pretrain` and `train` carry out `paper`'s recipe in a run folder that resumes after an
interruption; `load_model` and `load_encoder` read what they saved; `evaluate` and
`predict_images` score and use a model. The machinery behind them (checkpoints, sidecars,
devices) is the engine's (`aebonet_lib._engine`); this module is the door a chapter goes through.
"""

from aebonet_lib._engine.checkpoints import read_state, run_finished, saved_config
from aebonet_lib._engine.demo import demo_table, format_comparison, mean_baseline, median_baseline
from aebonet_lib._engine.modelfiles import load_model, read_model_meta
from aebonet_lib._engine.predict import evaluate, format_metrics, load_regressor, predict_images, split_index
from aebonet_lib._engine.runner import label_scale, load_encoder, pretrain, train

__all__ = [
    "demo_table", "evaluate", "format_comparison", "format_metrics", "label_scale", "load_encoder", "load_model",
    "load_regressor", "mean_baseline", "median_baseline", "predict_images", "pretrain", "read_model_meta", "read_state",
    "run_finished", "saved_config", "split_index", "train",
]
