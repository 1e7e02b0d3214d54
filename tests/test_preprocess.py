"""THE preprocessing function: decoding, resizing, and parity of torch, numpy and ONNX paths."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecrack.errors import ImageDecodeError
from edgecrack.preprocess import (
    InputContract,
    decode_bytes,
    decode_image,
    normalize_reference,
    preprocess,
    preprocess_files,
)

C224 = InputContract(224, 224)


@pytest.fixture(scope="module")
def real_jpeg(deck_dir) -> Path:
    return sorted((deck_dir / "CD").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def real_bgr(real_jpeg) -> np.ndarray:
    return decode_image(real_jpeg)


# -- decoding -------------------------------------------------------------------------


def test_decode_real_jpeg_is_what_cv2_imread_gives(real_jpeg):
    img = decode_image(real_jpeg)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, cv2.imread(str(real_jpeg), cv2.IMREAD_COLOR))
    np.testing.assert_array_equal(decode_bytes(real_jpeg.read_bytes(), "x"), img)


def test_decode_grey_png_expands_to_three_equal_channels(tmp_path, real_bgr):
    grey = cv2.cvtColor(real_bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    img = decode_image(tmp_path / "g.png")
    assert img.shape == (256, 256, 3)
    for ch in range(3):
        np.testing.assert_array_equal(img[..., ch], grey)


def test_decode_alpha_png_drops_alpha_keeps_bgr(tmp_path, real_bgr):
    alpha = np.linspace(0, 255, 256 * 256).reshape(256, 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), np.dstack([real_bgr, alpha]))
    img = decode_image(tmp_path / "a.png")
    np.testing.assert_array_equal(img, real_bgr)


def test_decode_16bit_png_scales_to_8bit(tmp_path):
    vals = np.array([[0, 257, 1000, 32896, 65535]], dtype=np.uint16)
    # 1000 / 257 = 3.89 -> 4; 32896 = 128 * 257
    expect = np.array([[0, 1, 4, 128, 255]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g16.png"), vals)
    img = decode_image(tmp_path / "g16.png")
    assert img.dtype == np.uint8 and img.shape == (1, 5, 3)
    np.testing.assert_array_equal(img[..., 1], expect)
    colour = np.dstack([vals, vals // 2, np.full_like(vals, 65535)])
    cv2.imwrite(str(tmp_path / "c16.png"), colour)
    img = decode_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(img[..., 0], expect)
    np.testing.assert_array_equal(img[..., 2], np.full((1, 5), 255, np.uint8))


def test_decode_float_tiff_in_unit_range_scales_to_8bit(tmp_path):
    f = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    cv2.imwrite(str(tmp_path / "f.tiff"), np.dstack([f, f, f]))
    img = decode_image(tmp_path / "f.tiff")
    np.testing.assert_array_equal(img[..., 0], [[0, 127, 255]])


def test_truncated_jpeg_is_rejected(tmp_path, real_jpeg):
    data = real_jpeg.read_bytes()
    for frac in (0.3, 0.9, 0.99):
        p = tmp_path / f"t{frac}.jpg"
        p.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ImageDecodeError) as e:
            decode_image(p)
        assert str(p) in e.value.message


def test_truncation_check_looks_for_eoi_after_the_last_scan():
    from edgecrack.preprocess import _is_truncated_jpeg

    head = b"\xff\xd8\xff\xe0" + b"\x00" * 20 + b"\xff\xda" + b"\x12\x34" * 50
    assert _is_truncated_jpeg(np.frombuffer(head, np.uint8))
    assert not _is_truncated_jpeg(np.frombuffer(head + b"\xff\xd9", np.uint8))
    assert not _is_truncated_jpeg(np.frombuffer(head + b"\xff\xd9" + b"trailer", np.uint8))
    # an EXIF thumbnail's EOI before the main scan does not count
    thumb = b"\xff\xd8\xff\xe1" + b"\xff\xd8\xff\xda\x01\xff\xd9" + b"\xff\xda" + b"\x12" * 40
    assert _is_truncated_jpeg(np.frombuffer(thumb, np.uint8))


def test_jpeg_with_bytes_after_eoi_is_accepted(tmp_path, real_jpeg, real_bgr):
    # some cameras and phones append trailer data after the end-of-image marker
    p = tmp_path / "trailer.jpg"
    p.write_bytes(real_jpeg.read_bytes() + b"\x01\x02camera trailer")
    np.testing.assert_array_equal(decode_image(p), real_bgr)


@pytest.mark.parametrize("content,match", [(b"", "empty file"), (b"GIF89a" + b"\0" * 30, "not a decodable image"),
                                           (b"hello, not an image", "not a decodable image")])
def test_bad_bytes_are_rejected_with_reason(tmp_path, content, match):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(p)


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read"):
        decode_image(tmp_path / "nope.jpg")


# -- resizing -------------------------------------------------------------------------


def _check_batch(out: np.ndarray, n: int, c: InputContract) -> None:
    assert out.shape == (n, c.height, c.width, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]


def test_shrink_uses_inter_area(real_bgr):
    out = preprocess(real_bgr, C224)
    _check_batch(out, 1, C224)
    np.testing.assert_array_equal(out[0], cv2.resize(real_bgr, (224, 224), interpolation=cv2.INTER_AREA))


def test_tile_to_model_input_is_inter_area_to_the_byte(real_bgr):
    """256 px tiles (the loop's default) reach 224 px through a linear remap that must equal
    OpenCV's area resize byte for byte, on tiles cut from a frame (strided views); geometries
    where area is not two-tap linear keep cv2.resize. (Its speed is a benchmark's business:
    benchmarks/run_loop times both.)"""
    from edgecrack.preprocess import _area_as_linear_maps

    frame = cv2.resize(real_bgr, (768, 512), interpolation=cv2.INTER_LINEAR)
    tiles = [frame[y:y + 256, x:x + 256] for y in (0, 256) for x in (0, 256, 512)]
    assert _area_as_linear_maps(256, 256, 224, 224) is not None, (
        f"OpenCV {cv2.__version__}'s remap no longer rounds like its area resize: tiles take the slow path")
    out = preprocess(tiles, C224)
    for t, o in zip(tiles, out):
        np.testing.assert_array_equal(o, cv2.resize(t, (224, 224), interpolation=cv2.INTER_AREA))
    for shape in ((225, 225), (300, 300), (288, 288)):  # weights that are not 1/256 multiples, or 3 taps
        assert _area_as_linear_maps(*shape, 224, 224) is None
        img = cv2.resize(real_bgr, shape[::-1], interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(preprocess(img, C224)[0], cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA))


def test_enlarge_uses_inter_linear_and_stretches(real_bgr):
    small = np.ascontiguousarray(real_bgr[:100, :150])
    out = preprocess([small], C224)
    _check_batch(out, 1, C224)
    np.testing.assert_array_equal(out[0], cv2.resize(small, (224, 224), interpolation=cv2.INTER_LINEAR))


def test_non_square_contract_and_mixed_sizes(real_bgr):
    c = InputContract(160, 288)
    imgs = [real_bgr, real_bgr[:64, :64], cv2.cvtColor(real_bgr, cv2.COLOR_BGR2GRAY), real_bgr[::-1, ::-1]]
    out = preprocess(imgs, c)
    _check_batch(out, 4, c)
    np.testing.assert_array_equal(out[0], cv2.resize(real_bgr, (288, 160), interpolation=cv2.INTER_AREA))
    grey = out[2]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    np.testing.assert_array_equal(out[3], cv2.resize(np.ascontiguousarray(real_bgr[::-1, ::-1]), (288, 160),
                                                     interpolation=cv2.INTER_AREA))


def test_same_size_passes_through_unchanged(real_bgr):
    c = InputContract(256, 256)
    out = preprocess(np.stack([real_bgr, real_bgr[:, ::-1]]), c)
    _check_batch(out, 2, c)
    np.testing.assert_array_equal(out[0], real_bgr)
    np.testing.assert_array_equal(out[1], real_bgr[:, ::-1])


def test_preprocess_files_matches_decode_then_preprocess(deck_dir):
    paths = sorted((deck_dir / "UD").glob("*.jpg"))[:3]
    out = preprocess_files(paths, C224)
    _check_batch(out, 3, C224)
    np.testing.assert_array_equal(out, preprocess([cv2.imread(str(p)) for p in paths], C224))


def test_preprocess_files_raises_on_a_bad_file(tmp_path, real_jpeg):
    (tmp_path / "bad.jpg").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty file"):
        preprocess_files([real_jpeg, tmp_path / "bad.jpg"], C224)


def test_contract_round_trips_through_json():
    c = InputContract(240, 320, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    d = json.loads(json.dumps(c.to_dict()))
    assert InputContract.from_dict(d) == c
    assert InputContract.from_dict({**d, "future_field": 1}) == c
    assert InputContract.from_dict({"height": 224, "width": 224}) == C224


def test_normalize_reference_by_hand():
    batch = np.zeros((1, 2, 2, 3), np.uint8)
    batch[0, 0, 1] = (10, 20, 30)  # B, G, R
    x = normalize_reference(batch, C224)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x[0, :, 0, 1], [(30 - 127) / 128, (20 - 127) / 128, (10 - 127) / 128])
    np.testing.assert_allclose(x[0, :, 0, 0], [-127 / 128] * 3)
    imagenet = InputContract(2, 2, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    y = normalize_reference(batch, imagenet)
    np.testing.assert_allclose(y[0, :, 0, 1], [(30 - 123.675) / 58.395, (20 - 116.28) / 57.12, (10 - 103.53) / 57.375],
                               rtol=1e-6)


# -- THE parity test: torch eval path == numpy reference + same backbone == ONNX graph ------


@pytest.mark.parametrize("contract", [C224, InputContract(64, 96, mean=(123.675, 116.28, 103.53),
                                                          std=(58.395, 57.12, 57.375)),
                                      InputContract(64, 64, color="RGB", mean=(10.0, 100.0, 200.0), std=(2.0, 50.0, 99.0))])
def test_in_graph_normalize_equals_reference(contract, holdout_deck, one_torch_thread):
    torch = one_torch_thread
    from edgecrack.train.model import Normalize

    batch = preprocess_files(sorted(holdout_deck.rglob("*.jpg"))[:4], contract)
    with torch.inference_mode():
        got = Normalize(contract)(torch.from_numpy(batch)).numpy()
    ref = normalize_reference(batch, contract)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)


def test_torch_eval_path_numpy_reference_and_onnx_agree(trained_run, holdout_deck, one_torch_thread):
    torch = one_torch_thread
    import onnxruntime as ort

    from edgecrack.train.checkpoint import load_checkpoint

    net, m = load_checkpoint(trained_run)
    paths = sorted(holdout_deck.rglob("*.jpg"))
    paths = paths[:3] + paths[-3:]  # both classes
    batch = preprocess_files(paths, m.input)
    with torch.inference_mode():
        p_torch = net(torch.from_numpy(batch)).numpy()
        # reference: numpy normalisation of each flip view (the graph's test-time augmentation),
        # the same trunk and head, softmax averaged over the views
        views = [batch, batch[:, :, ::-1], batch[:, ::-1], batch[:, ::-1, ::-1]][:net.tta]
        p_ref = np.mean([torch.softmax(net.logits_from_trunk(net.trunk(torch.from_numpy(
            normalize_reference(np.ascontiguousarray(v), m.input)))), 1).numpy() for v in views], 0)
        assert net.tta == m.head["tta"] == 2
    np.testing.assert_allclose(p_torch, p_ref, atol=1e-5)
    np.testing.assert_allclose(p_torch.sum(1), 1.0, atol=1e-5)

    sess = ort.InferenceSession(str(trained_run / "model.onnx"), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == m.input_name and inp.type == "tensor(uint8)"
    assert inp.shape[1:] == [m.input.height, m.input.width, 3]
    p_onnx = sess.run([m.output_name], {m.input_name: batch})[0]
    assert np.abs(p_onnx - p_torch).max() < 1e-4
    np.testing.assert_array_equal(p_onnx.argmax(1), p_torch.argmax(1))
    # the model is not constant: real images give different outputs
    assert p_torch[:, 0].std() > 1e-3
