"""Grading: the hidden checks pass the worked solutions, fail every known shortcut, and a grade never reads printed text.

The in-process tests build a notebook's namespace from a chapter's worked solutions (its
imports, functions, classes and light assignments, as `grade --fast` keeps them); the
notebook tests run `tools/book.py grade` on returned notebooks in a fresh kernel.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402  (tools/book.py)
from aebonet_lib import exercises  # noqa: E402

SOURCES = {book.chapter_number(s): s for s in book.chapter_sources() if book.chapter_number(s)}
SLOW = pytest.mark.skipif(os.environ.get("AEBONET_FAST_TESTS") == "1", reason="starts a kernel")


def solution_sources(chapter: int) -> list[str]:
    """Return a chapter's code cells as the teacher edition has them: worked solutions, no stubs."""
    cells = jupytext.read(SOURCES[chapter]).cells
    return [c.source for c in cells if c.cell_type == "code" and "student-stub" not in c.metadata.get("tags", [])]


def namespace(chapter: int, extra: str = "") -> dict:
    """Return the namespace a notebook of the worked solutions defines, with `extra` code run last."""
    found = {"__name__": "__main__"}
    for statement in book.definitions(solution_sources(chapter)) + ([extra] if extra else []):
        try:
            exec(compile(statement, f"<chapter {chapter}>", "exec"), found)  # noqa: S102
        except Exception:  # noqa: BLE001  (a statement that needs the chapter's data)
            if statement is extra:
                raise
    return found


def test_registry_matches_the_chapters_graded_exercises():
    table = {row["number"]: row for row in book.exercise_table() if row["difficulty"] in book.GRADES}
    assert sorted(table) == sorted(exercises.EXERCISES), "every graded exercise needs a check, and only those"
    for number, row in table.items():
        registered = exercises.EXERCISES[number]
        assert (registered.label, registered.difficulty) == (row["label"], row["difficulty"]), number


def test_check_cells_pass_the_registered_answers():
    for chapter, source in SOURCES.items():
        text = source.read_text()
        for exercise in exercises.of_chapter(chapter):
            call = f'course.check("{exercise.number}", {", ".join(exercise.answers)})'
            assert call in text, f"{source.name}: expected the check cell {call}"


def test_weights_are_defined_once_and_shown_on_the_teachers_page():
    assert set(exercises.WEIGHTS) == set(book.GRADES)
    assert all(e.weight == exercises.WEIGHTS[e.difficulty] for e in exercises.EXERCISES.values())
    teachers = (ROOT / "book" / "teachers.md").read_text()
    assert "exercises.WEIGHTS" in teachers, "the teachers' page must read the weights from aebonet_lib.exercises"


@pytest.mark.parametrize("chapter", sorted(SOURCES))
def test_worked_solutions_pass_every_check(chapter):
    found = namespace(chapter)
    rows = exercises.grade_namespace(found, [chapter], seed=1)
    assert [r["status"] for r in rows] == ["correct"] * len(rows), rows


SHORTCUTS = {
    "1.1 the state's own count": ("1.1", """
def carpal_count(bone_age_months, male):
    return phantom.maturity_state(bone_age_months, male)["carpals_visible"]
"""),
    "1.2 a linear formula": ("1.2", """
def toy_maturity_score(bone_age_months, male):
    return min(100.0, 100 * bone_age_months / (228 if male else 200))
"""),
    "3.1 Keras counts for you": ("3.1", """
def conv_block_params(c_in, c_out):
    image = keras.Input((8, 8, c_in))
    return keras.Model(image, recipe.conv_block(image, c_out, "x", 0.9)).count_params()
"""),
    "4.1 Keras counts for you": ("4.1", """
def head_params(n_features, units=10):
    layers = [keras.layers.BatchNormalization(), keras.layers.Dense(units), keras.layers.Dense(1)]
    keras.Sequential([keras.Input((n_features,)), *layers])
    return sum(layer.count_params() for layer in layers)
"""),
    "4.3 scikit-learn's Ridge": ("4.3", """
def ridge_predict(F_train, y_train, F_test, alpha):
    from sklearn.linear_model import Ridge
    return Ridge(alpha=alpha).fit(F_train, y_train).predict(F_test)
"""),
    "7.2 the formula, no simulation": ("7.2", """
def mae_floor(sd, readers=1, n=50_000, seed=0):
    formula = sd * np.sqrt(2 / np.pi) / np.sqrt(readers)
    return formula, formula
"""),
    "6.1 the library's metrics": ("6.1", """
def error_summary(y, y_hat):
    return {"mae": metrics.mae(y, y_hat), "rmse": metrics.rmse(y, y_hat), "bias": metrics.bias(y, y_hat)}
"""),
    "6.3 the library's bootstrap": ("6.3", """
def paired_interval(y, y_hat_a, y_hat_b, n_boot=2000, seed=0):
    return tuple(metrics.paired_bootstrap(y, y_hat_a, y_hat_b, n_boot=n_boot, seed=seed)["ci95"])
"""),
    "2.6 no augmentation": ("2.6", """
def augmentation(rotation, shift, zoom, seed):
    return keras.Sequential([keras.layers.Identity()])
"""),
    "2.6 the layers in another order": ("2.6", """
def augmentation(rotation, shift, zoom, seed):
    return keras.Sequential([
        layers.RandomZoom(zoom, fill_mode="constant", seed=seed),
        layers.RandomRotation(rotation / 360, fill_mode="constant", seed=seed),
        layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed)])
"""),
    "3.6 the library's decoder": ("3.6", """
def build_decoder(config):
    return recipe.build_decoder(config)
"""),
    "3.6 the library's decoder, renamed": ("3.6", "build_decoder = recipe.build_decoder"),
    "3.6 batch norm before ReLU": ("3.6", """
def conv_block(x, filters, name, momentum):
    x = layers.Conv2D(filters, 3, padding="same")(x)
    return layers.ReLU()(layers.BatchNormalization(momentum=momentum)(x))
"""),
    "4.7 a head without weight decay": ("4.7", """
def add_head(features, momentum):
    x = layers.BatchNormalization(momentum=momentum)(layers.GlobalAveragePooling2D()(features))
    return layers.Dense(1)(layers.Dense(10, activation="relu")(x))
"""),
    "4.7 a step that does not update": ("4.7", """
def train_step(model, optimizer, images, ages):
    return float(tf.reduce_mean(tf.square(model(images, training=True) - ages)) + sum(model.losses))
"""),
    "4.7 a step without the weight decay": ("4.7", """
def train_step(model, optimizer, images, ages):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True) - ages))
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return float(loss) + float(sum(model.losses))
"""),
    "4.7 Keras's own step": ("4.7", """
def train_step(model, optimizer, images, ages):
    model.compile(optimizer=optimizer, loss="mse")
    return model.train_on_batch(images, ages)
"""),
    "5.6 no loss scaling": ("5.6", """
def scaled_step(model, optimizer, loss_fn, x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    optimizer.inner_optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return loss
"""),
    "6.6 the library's Grad-CAM": ("6.6", """
def grad_cam(model, image, layer_name):
    return explain.gradcam(model, image, layer_name=layer_name)
"""),
    "6.6 a saliency map instead": ("6.6", """
def grad_cam(model, image, layer_name):
    batch = tf.constant(np.asarray(image, np.float32)[None])
    with tf.GradientTape() as tape:
        tape.watch(batch)
        age = model(batch)
    saliency = np.abs(tape.gradient(age, batch).numpy()[0, ..., 0])
    return saliency / saliency.max()
"""),
    "7.7 single pixels masked": ("7.7", """
class PatchMask(keras.layers.Layer):
    def __init__(self, patch, ratio=0.5, **kwargs):
        super().__init__(**kwargs)
        self.ratio, self.seeds = ratio, keras.random.SeedGenerator()

    def call(self, images, training=False):
        if not training:
            return images
        return images * keras.ops.cast(keras.random.uniform(keras.ops.shape(images), seed=self.seeds) >= self.ratio, images.dtype)
"""),
    "7.7 a loss against the masked images": ("7.7", """
def masked_loss(model, mask, images):
    masked = mask(images, training=True)
    return keras.ops.mean(keras.ops.square(model(masked, training=True) - masked))
"""),
}


@pytest.mark.parametrize("name", sorted(SHORTCUTS))
def test_a_shortcut_fails_its_check(name):
    number, code = SHORTCUTS[name]
    exercise = exercises.EXERCISES[number]
    row = exercises.grade_one(exercise, namespace(exercise.chapter, code), seed=2)
    assert row["score"] == 0 and row["status"] != "correct", f"{name} passed exercise {number}"


def returned_notebook(tmp_path: Path, chapter: int, extra_cells: list[str] = (), printed_only: bool = False) -> Path:
    """Write a returned notebook of a chapter: its worked solutions (plus extra cells), or only printed lines."""
    if printed_only:
        cells = [nbformat.v4.new_code_cell(f'print("Exercise {e.number}: correct.")') for e in exercises.of_chapter(chapter)]
        notebook = nbformat.v4.new_notebook(cells=cells)
    else:
        notebook = nbformat.reads(book.notebook_text(SOURCES[chapter]), as_version=4)
        notebook.cells += [nbformat.v4.new_code_cell(code) for code in extra_cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / SOURCES[chapter].with_suffix(".ipynb").name
    nbformat.write(notebook, path)
    return path


@SLOW
def test_a_notebook_that_only_prints_scores_zero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = book.grade([str(returned_notebook(tmp_path, 1, printed_only=True))])
    assert [r["score"] for r in rows] == [0, 0, 0, 0.0], rows
    assert (tmp_path / "grades.csv").read_text().splitlines()[0] == ",".join(book.GRADE_COLUMNS)


@SLOW
def test_a_notebook_that_kills_its_kernel_scores_zero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nos._exit(0)")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "ch1_reading.ipynb")
    rows = book.grade([str(tmp_path / "ch1_reading.ipynb")])
    assert [r["score"] for r in rows] == [0, 0, 0, 0.0] and rows[0]["status"] == "grading did not finish", rows


@SLOW
def test_worked_solutions_score_full_marks_and_a_shortcut_scores_zero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shortcut = SHORTCUTS["1.1 the state's own count"][1]
    solved = returned_notebook(tmp_path, 1)
    cheat_dir = tmp_path / "cheat"
    cheat_dir.mkdir()
    cheat = returned_notebook(cheat_dir, 1, extra_cells=[shortcut])
    rows = book.grade([str(solved), str(cheat)], fast=True)
    solved_rows, cheat_rows = rows[:4], rows[4:]
    assert [r["score"] for r in solved_rows] == [1, 1, 1, 100.0], solved_rows
    assert [r["score"] for r in cheat_rows] == [0, 1, 1, round(100 * 5 / 6, 1)], cheat_rows


@SLOW
def test_worked_keras_solutions_score_full_marks_in_a_kernel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = book.grade([str(returned_notebook(tmp_path, 7))], fast=True)
    assert rows[-1]["score"] == 100.0, rows
