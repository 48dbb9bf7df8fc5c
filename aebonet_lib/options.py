"""The values a run's options may take: plain names, importable without TensorFlow.

`config` builds its presets from the recipe (`paper`), which needs Keras; the command
line's `--help` and the phantom's commands need only these names, so they start in a
fraction of a second instead of waiting for TensorFlow.
"""

# The presets of config.PRESETS (tests/test_layout.py checks that the two agree).
PRESET_NAMES = ("paper", "cpu", "rsna-cpu", "rsna-class", "colab")
# How a dataset is split: the paper's seeded random split, the same sizes stratified by age (our choice),
# or the RSNA challenge's own training / validation / test sets (official layout only).
SPLIT_KINDS = ("paper", "stratified", "official")
DECODERS = ("upsample_conv", "conv_upsample", "transpose")
LR_SCHEDULES = ("constant", "cosine")
KEEP = ("best", "last")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: bf16 on GPUs from compute capability 8.0 and AMX CPUs
OBJECTIVES = ("autoencoder", "masked")  # pretraining: the paper's reconstruction, or masked patches (beyond the paper)
# Images with more pixels are refused before decoding (_engine.imagefiles; --max-pixels raises it): a PNG of a few
# hundred KB can claim 20000 x 20000 pixels and take gigabytes to decode. A hand radiograph has 2-10 megapixels.
MAX_PIXELS = 50_000_000
