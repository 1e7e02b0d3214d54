"""The one decision policy: tiles, frames and files decide the same way (edgecrack/loop/postprocess.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecrack.loop.postprocess import (DEFAULT_THRESHOLD, cracked_mask, frame_verdict, predict_labels,
                                        resolve_threshold)


def test_predict_labels_threshold_on_positive_class():
    probs = np.array([[0.30, 0.70], [0.20, 0.80], [0.55, 0.45]])
    np.testing.assert_array_equal(predict_labels(probs, 0, 0.25), [0, 1, 0])
    np.testing.assert_array_equal(predict_labels(probs, 0, 0.6), [1, 1, 1])
    np.testing.assert_array_equal(predict_labels(probs, 1, 0.75), [0, 1, 0])
    np.testing.assert_array_equal(predict_labels(probs, None, None), [1, 1, 0])
    three = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    np.testing.assert_array_equal(predict_labels(three, 0, 0.1), [1, 0])  # argmax beyond binary


def test_file_prediction_and_frame_verdict_agree_at_the_threshold():
    """A one-tile frame is cracked exactly when predict_labels says positive, also at p == threshold."""
    probs = np.array([[0.5, 0.5], [0.49, 0.51], [0.51, 0.49], [0.0, 1.0], [1.0, 0.0]], np.float32)
    for thr in (0.0, 0.49, 0.5, 0.51, 1.0):
        files = predict_labels(probs, 0, thr) == 0
        frames = [frame_verdict(np.array([[p]], np.float32), thr).cracked for p in probs[:, 0]]
        assert files.tolist() == frames, thr
    assert cracked_mask(np.float32(0.5), 0.5)  # at the threshold counts as cracked


def test_frame_verdict_counts_tiles_against_min_tiles():
    cmap = np.array([[0.9, 0.2], [0.6, 0.59]], np.float32)
    v = frame_verdict(cmap, 0.6, min_tiles=2)
    assert (v.cracked, v.cracked_tiles) == (True, 2) and v.score == pytest.approx(0.9)
    assert not frame_verdict(cmap, 0.6, min_tiles=3).cracked


def test_threshold_in_force():
    assert resolve_threshold(0.3, 0.7) == 0.3
    assert resolve_threshold(None, 0.7) == 0.7
    assert resolve_threshold(None, None) == DEFAULT_THRESHOLD == 0.5
    assert resolve_threshold(0.0, 0.7) == 0.0  # an explicit 0 is not "unset"
