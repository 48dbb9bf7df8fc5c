"""tf.data pipelines: shapes and types, targets, sex input, shuffling, augmentation, determinism."""

import numpy as np
import pytest
from conftest import write_kaggle

from aebonet_lib.data import pipeline
from aebonet_lib.data.loading import BoneAgeData, load_data
from aebonet_lib.data.preprocess import PreprocessParams
from aebonet_lib.errors import AebonetError

N, S = 30, 32


@pytest.fixture(scope="module")
def data() -> BoneAgeData:
    """Return a small dataset whose image k is filled with the grey level k, so batches show their rows."""
    X = np.repeat(np.arange(N, dtype=np.uint8)[:, None, None] * 8, S * S).reshape(N, S, S)
    X[:, :4] = 0  # a dark band, so that contrast changes have something to act on
    return BoneAgeData(X=X, y=np.arange(N, dtype=np.float32) * 5, male=(np.arange(N) % 2).astype(np.float32),
                       ids=np.array([str(i) for i in range(N)]), params=PreprocessParams(S), source="test",
                       splits={"train": np.arange(0, 20), "val": np.arange(20, 25), "test": np.arange(25, 30)})


def rows_of(x: np.ndarray) -> list[int]:
    """Return which dataset row each image of a batch came from (its grey level / 8)."""
    return [int(round(v)) for v in x[:, S - 1, S - 1, 0] * 255 / 8]


def epochs(ds, n=2) -> list[list[np.ndarray]]:
    """Return n epochs of a dataset as lists of numpy (x, y) batches."""
    return [[(x.numpy(), y.numpy()) for x, y in ds] for _ in range(n)]


def test_batches_have_the_documented_shapes_and_values(data):
    x, y = next(iter(pipeline.make_tf_dataset(data, "val", batch_size=4)))
    assert x.shape == (4, S, S, 1) and x.dtype == "float32" and y.dtype == "float32"
    assert rows_of(x.numpy()) == [20, 21, 22, 23]  # val is not shuffled by default
    assert np.allclose(y.numpy(), [100, 105, 110, 115])
    assert 0 <= x.numpy().min() and x.numpy().max() <= 1


def test_image_target_is_the_input(data):
    x, y = next(iter(pipeline.make_tf_dataset(data, "test", batch_size=5, target="image")))
    assert np.array_equal(x.numpy(), y.numpy())


def test_sex_input_gives_two_features(data):
    features, y = next(iter(pipeline.make_tf_dataset(data, "val", batch_size=5, sex_input=True)))
    assert set(features) == {"image", "sex"} and features["sex"].shape == (5, 1)
    assert features["sex"].numpy()[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_train_is_shuffled_every_epoch_and_covers_every_image(data):
    first, second = epochs(pipeline.make_tf_dataset(data, "train", batch_size=8, seed=1))
    order1 = sum((rows_of(x) for x, _ in first), [])
    order2 = sum((rows_of(x) for x, _ in second), [])
    assert sorted(order1) == sorted(order2) == list(range(20))
    assert order1 != list(range(20)) and order1 != order2
    labels = np.concatenate([y for _, y in first])
    assert np.allclose(labels, np.array(order1) * 5)  # labels travel with their images


def test_same_seed_same_batches_with_augmentation(data):
    runs = [epochs(pipeline.make_tf_dataset(data, "train", 8, augment=True, seed=s)) for s in (3, 3, 4)]
    flat = [np.concatenate([x for epoch in run for x, _ in epoch]) for run in runs]
    assert np.array_equal(flat[0], flat[1])
    assert not np.array_equal(flat[0], flat[2])


def test_augmentation_changes_images_but_not_labels(data):
    plain = next(iter(pipeline.make_tf_dataset(data, "train", 20, shuffle=False)))
    augmented = next(iter(pipeline.make_tf_dataset(data, "train", 20, shuffle=False, augment=True)))
    assert np.array_equal(plain[1].numpy(), augmented[1].numpy())
    difference = np.abs(plain[0].numpy() - augmented[0].numpy()).mean(axis=(1, 2, 3))
    assert (difference > 0.001).all() and difference.max() < 0.5  # every image changed, none beyond recognition
    assert 0 <= augmented[0].numpy().min() and augmented[0].numpy().max() <= 1


def test_drop_remainder(data):
    sizes = [len(y) for _, y in pipeline.make_tf_dataset(data, "train", 8, drop_remainder=True)]
    assert sizes == [8, 8]


def test_bad_requests_are_refused(data):
    with pytest.raises(AebonetError, match="training split only"):
        pipeline.make_tf_dataset(data, "test", 4, augment=True)
    with pytest.raises(AebonetError, match="target 'mask'"):
        pipeline.make_tf_dataset(data, "train", 4, target="mask")
    with pytest.raises(AebonetError, match="split 'dev'"):
        pipeline.make_tf_dataset(data, "dev", 4)
    unlabeled = BoneAgeData(**{**data.__dict__, "y": np.full(N, np.nan, np.float32)})
    with pytest.raises(AebonetError, match="without a bone age"):
        pipeline.make_tf_dataset(unlabeled, "test", 4)
    assert pipeline.make_tf_dataset(unlabeled, "test", 4, target="image") is not None


def test_epochs_over_a_dataset_with_bad_files_never_crash(tmp_path, tmp_cache):
    write_kaggle(tmp_path / "k", n=10)
    (tmp_path / "k" / "boneage-training-dataset" / "1003.png").write_bytes(b"\x89PNG broken")
    prepared = load_data(tmp_path / "k", 32, skip_bad=True, progress=False, workers=1)
    ds = pipeline.make_tf_dataset(prepared, "train", 4, augment=True)
    seen = [len(y) for _ in range(2) for _, y in ds]
    assert sum(seen) == 2 * len(prepared.splits["train"]) and "1003" not in prepared.ids


def test_a_keyed_stream_gives_epoch_e_the_same_batches_whatever_came_before(data):
    import tensorflow as tf

    def batches(ds):
        return [(x.numpy(), y.numpy()) for x, y in ds]

    epoch = tf.Variable(0, dtype=tf.int64)
    ds = pipeline.make_tf_dataset(data, "train", 4, augment=True, seed=3, epoch=epoch)
    first = batches(ds)
    epoch.assign(1)
    second = batches(ds)
    assert not np.array_equal(first[0][1], second[0][1])  # another order in the next epoch
    fresh_epoch = tf.Variable(1, dtype=tf.int64)  # a resumed run: a new pipeline, straight at epoch 1
    resumed = batches(pipeline.make_tf_dataset(data, "train", 4, augment=True, seed=3, epoch=fresh_epoch))
    for (x, y), (x_again, y_again) in zip(second, resumed):
        np.testing.assert_array_equal(y, y_again)
        np.testing.assert_allclose(x, x_again, atol=1e-6)
    assert sorted(np.concatenate([y for _, y in second])) == sorted(data.y[data.splits["train"]])
