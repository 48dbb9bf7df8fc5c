"""Checks of the coding exercises of chapters 1 and 2: fresh random inputs, a reference computed here."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from aebonet_lib._engine import imagefiles
from aebonet_lib.data import preprocess
from aebonet_lib.exercises import code_words
from aebonet_lib.phantom import timeline

EPIPHYSIS_LETTERS, CARPAL_LETTERS = "ABCDEFGH", "ABCD"


def ages(rng, n: int = 12) -> list[float]:
    """Return `n` random bone ages in months, whole and fractional, from birth to 19 years."""
    return [float(a) for a in np.round(rng.uniform(0, 228, n), int(rng.integers(0, 2)))]


def state_without_counts():
    """Return phantom.maturity_state without its ready-made carpal count (a student counts it)."""
    original = timeline.maturity_state

    def maturity_state(*args, **kwargs):
        state = dict(original(*args, **kwargs))
        state.pop("carpals_visible", None)
        return state

    return maturity_state


def check_carpal_count(carpal_count, rng) -> None:
    """Compare carpal_count with the visible carpals of the state, at random ages."""
    import aebonet_lib.phantom as phantom

    assert "carpals_visible" not in code_words(carpal_count), \
        "count the carpals whose state says visible; the state's own count is not the answer"
    cases = [(a, bool(male)) for a, male in zip(ages(rng), rng.integers(0, 2, 12))]
    expected = [sum(bool(c["visible"]) for c in timeline.maturity_state(a, m)["carpals"].values()) for a, m in cases]
    patched = state_without_counts()
    with _replaced((phantom, "maturity_state", patched), (timeline, "maturity_state", patched)):
        got = [carpal_count(a, m) for a, m in cases]
    assert all(0 <= c <= 8 for c in got), f"a wrist has 0 to 8 carpal centres, got {got}"
    assert got == expected, f"at ages {[round(a, 1) for a, _ in cases]}: expected {expected}, got {got}"


def _replaced(*replacements):
    """Return a context that sets each (owner, name, value) and restores it afterwards."""
    @contextlib.contextmanager
    def context():
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
        try:
            for owner, name, value in replacements:
                setattr(owner, name, value)
            yield
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)

    return context()


def epiphysis_letter(e: dict) -> str:
    """Return the toy stage letter of one epiphysis state (chapter 1's table)."""
    if not e["visible"]:
        return "A"
    if e["fused"]:
        return "G" if e["scar"] > 0 else "H"
    if e["fusion"] > 0:
        return "F"
    if e["capping"] > 0:
        return "E"
    if e["width_ratio"] >= 1:
        return "D"
    return "C" if e["width_ratio"] >= 0.6 else "B"


def carpal_letter(c: dict) -> str:
    """Return the toy stage letter of one carpal state."""
    if not c["visible"]:
        return "A"
    return "D" if c["shape"] >= 1 else "C" if c["shape"] >= 0.5 else "B"


def reference_score(months: float, male: bool) -> float:
    """Return the toy maturity score computed from the stages, 0-100."""
    state = timeline.maturity_state(months, male)
    points = sum(EPIPHYSIS_LETTERS.index(epiphysis_letter(e)) for e in state["epiphyses"].values())
    points += sum(CARPAL_LETTERS.index(carpal_letter(c)) for c in state["carpals"].values())
    most = 7 * len(state["epiphyses"]) + 3 * len(state["carpals"])
    return 100 * points / most


def check_toy_maturity_score(toy_maturity_score, rng) -> None:
    """Compare toy_maturity_score with the score of the stages at random ages and sexes."""
    for months in ages(rng, 16):
        male = bool(rng.integers(0, 2))
        got, expected = toy_maturity_score(months, male), reference_score(months, male)
        assert abs(got - expected) < 1e-6, (f"a {'boy' if male else 'girl'} of {months} months: the stages "
                                            f"give {expected:.2f}, you {got:.2f}")


def check_age_from_score(age_from_score, rng) -> None:
    """Compare age_from_score with the youngest month whose score reaches it, for random scores."""
    for male in (False, True):
        table = np.array([reference_score(m, male) for m in range(229)])
        scores = [*rng.uniform(0, table.max(), 5), table[int(rng.integers(0, 229))]]
        for score in scores:
            expected = float(np.argmax(table >= score))
            got = age_from_score(score, male)
            assert got == expected, f"score {score:.2f} ({'boys' if male else 'girls'}): expected {expected:.0f} months, got {got}"
        assert np.isnan(age_from_score(100 + rng.uniform(0.5, 5), male)), "no hand scores above 100: expected nan"


def check_age_share(age_share, rng) -> None:
    """Compare age_share with the share of known ages in random bands of random labels."""
    y = rng.uniform(0, 228, 40).round()
    y[rng.choice(40, 7, replace=False)] = np.nan
    low, high = sorted(rng.choice(np.unique(y[np.isfinite(y)]), 2, replace=False))
    for a, b in ((low, high), (0.0, low), (high, 240.0)):
        known = y[np.isfinite(y)]
        expected = float(np.mean((known >= a) & (known < b)))
        got = age_share(y.copy(), a, b)
        assert abs(got - expected) < 1e-12, f"band [{a:.0f}, {b:.0f}): expected {expected:.4f}, got {got}"


def check_prepare_one(prepare_one, rng) -> None:
    """Compare prepare_one with read_image, preprocess and to_uint8 on a random image file."""
    import cv2


    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.png"
        image = (rng.random((int(rng.integers(30, 60)), int(rng.integers(30, 60)))) * 255).astype(np.uint8)
        cv2.imwrite(str(path), image)
        for clahe in (False, True):
            params = preprocess.PreprocessParams(int(rng.integers(16, 48)), clahe=clahe)
            expected = preprocess.to_uint8(preprocess.preprocess(imagefiles.read_image(path), params))
            got = np.asarray(prepare_one(path, params))
            assert got.shape == expected.shape, f"expected shape {expected.shape}, got {got.shape}"
            assert got.dtype == np.uint8, f"the cache stores uint8, got {got.dtype}"
            assert np.array_equal(got, expected), f"with clahe={clahe} the image differs from the cache's row"


def check_band_weights(band_weights, rng) -> None:
    """Compare band_weights with inverse band counts scaled to mean 1, on random labels and bands."""
    y = rng.uniform(0, 228, int(rng.integers(30, 80)))
    edges = np.unique(np.concatenate([[0], rng.uniform(10, 220, 4).round(), [241]]))
    band = np.digitize(y, edges)
    counts = {b: np.sum(band == b) for b in np.unique(band)}
    expected = np.array([1 / counts[b] for b in band])
    expected /= expected.mean()
    got = np.asarray(band_weights(y.copy(), edges))
    assert got.shape == y.shape, f"one weight per label: expected shape {y.shape}, got {got.shape}"
    assert np.allclose(got, expected), f"expected {np.round(expected[:4], 3)}..., got {np.round(got[:4], 3)}..."
