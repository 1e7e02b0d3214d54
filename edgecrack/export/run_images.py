"""The run's own FP32 model and images for a reduced-precision export: calibration, search and held-out sets.

Both INT8 paths (:mod:`edgecrack.export.precision` for TensorRT Q/DQ and FP16,
:mod:`edgecrack.export.quantize` for onnxruntime CPU INT8) draw them here, so they calibrate,
search and judge on the same images:

- :func:`calibration_for`: the calibration set (``--calib``, else a seeded stratified draw
  from the run's training split);
- :func:`search_images_for`: training images outside the calibration set, which the
  mixed-precision search scores models on (:mod:`edgecrack.export.mixed`);
- :func:`eval_images_for`: labelled held-out images (``--eval-data``, else the run's validation
  + test split) minus any calibration image, for the accuracy and agreement gates;
- :func:`fp32_source`: the FP32 model both start from, refused when it is another artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..calibration import CalibrationSource, calibration_hash, load_calibration
from ..errors import ArtifactError, ConfigError, DatasetError
from ..manifest import Manifest, read_manifest

CALIBRATION_IMAGES = 64
#: Training images (outside the calibration set) the mixed-precision search is scored on.
SEARCH_IMAGES = 160


def calibration_for(onnx_path: Path, calib: str | Path | None, n: int = CALIBRATION_IMAGES, seed: int = 0
                    ) -> CalibrationSource:
    """The calibration set: ``calib`` when given, else a seeded stratified draw from the run's training split.

    Raises:
        DatasetError: No ``--calib`` and no recorded splits next to the model.
    """
    if calib is not None:
        return load_calibration(calib)
    from ..splits import run_dir_of, run_split, stratified_draw, verified

    run = run_dir_of(onnx_path)
    if run is None:
        raise DatasetError(f"no calibration images for {onnx_path}: it is not in a run folder with splits.json",
                           "pass --calib FOLDER (edgecrack calibration build --source YOUR_DATA --out FOLDER)")
    picked = verified(stratified_draw(run_split(run, "train"), n, seed), "training")
    if len(picked) < 8:
        raise DatasetError(f"only {len(picked)} training images of {run} are available for calibration",
                           "pass --calib FOLDER with at least 32 images")
    return CalibrationSource(run, [p for p, _, _ in picked], [lab for _, lab, _ in picked],
                             calibration_hash([sha for _, _, sha in picked]),
                             {"source": f"{run} training split", "seed": seed, "n": len(picked)})


def search_images_for(onnx_path: Path, calib: CalibrationSource, m: Manifest, n: int = SEARCH_IMAGES) -> np.ndarray:
    """Images the mixed-precision search scores models on: training images that did not set the
    ranges (a seeded stratified draw), else the calibration images when the model has no run.

    Scored on the calibration images themselves, one float unit "reached" 100 % agreement on the
    224 px default where the held-out images then gave 95.8 %: ranges fitted to a set flatter it.
    """
    from ..preprocess import decode_image, preprocess
    from ..splits import run_dir_of, run_split, stratified_draw, verified

    run = run_dir_of(onnx_path)
    if run is not None:
        from ..data import content_hash

        cal = {content_hash(p) for p in calib.paths}
        rest = [it for it in run_split(run, "train") if it[2] not in cal]
        picked = verified(stratified_draw(rest, n, seed=1), "training") if len(rest) >= 32 else []
        if picked:
            return preprocess([decode_image(p) for p, _, _ in picked], m.input)
    return np.concatenate(list(calib.batches(m.input, 32)))


def eval_images_for(onnx_path: Path, eval_data: str | Path | None, manifest: Manifest, calib: CalibrationSource
                    ) -> tuple[str, np.ndarray, np.ndarray]:
    """Labelled held-out images for the accuracy check, preprocessed by the inference function.

    ``eval_data`` when given (minus any calibration image), else the run's validation + test split.

    Returns:
        (description, ``uint8 [N,H,W,3]``, label indices)
    """
    from ..data import content_hash, discover
    from ..errors import ImageDecodeError
    from ..preprocess import decode_image, preprocess

    if eval_data is not None:
        ds = discover(Path(eval_data), "folder", min_classes=1)
        items = [(s.path, s.label, content_hash(s.path)) for s in ds.samples]
        where = str(eval_data)
    else:
        from ..splits import run_dir_of, run_split, verified

        run = run_dir_of(onnx_path)
        if run is None:
            raise DatasetError(f"no held-out images for {onnx_path}: it is not in a run folder with splits.json",
                               "pass --eval-data FOLDER (labelled class folders)")
        items = verified(run_split(run, "validation", "test"), "held-out")  # sha1 checked there, once
        where = f"{run} validation + test split"
    calib_hashes = {content_hash(p) for p in calib.paths}
    keep = [(p, lab) for p, lab, sha in items if lab in manifest.labels and sha not in calib_hashes]
    if len(keep) < 20:
        raise DatasetError(f"only {len(keep)} labelled held-out images ({where}) outside the calibration set; the "
                           "accuracy check needs at least 20", "pass --eval-data with a larger labelled folder")
    imgs, ys = [], []
    for p, lab in keep:
        try:
            imgs.append(decode_image(p))
            ys.append(manifest.labels.index(lab))
        except ImageDecodeError:
            continue
    return f"{len(ys)} images, {where}", preprocess(imgs, manifest.input), np.array(ys)


def fp32_source(onnx_path: Path) -> Manifest:
    """The manifest of the FP32 edgecrack ONNX model a reduced-precision export starts from.

    An FP16 or Q/DQ export is an ONNX model (kind ``onnx``) too, and an onnxruntime INT8 model is
    one file name away: made again from one of them, an artifact would be checked against a
    reduced-precision reference as if it were FP32.

    Raises:
        ArtifactError: No such file.
        ConfigError: Another kind of artifact, named with what it is.
    """
    if not onnx_path.is_file():
        raise ArtifactError(f"ONNX model not found: {onnx_path}", "export it first: edgecrack export RUN")
    m = read_manifest(onnx_path)
    if m.kind != "onnx" or m.extra.get("precision", "fp32") != "fp32":
        what = m.extra.get("precision") if m.kind == "onnx" else repr(m.kind)
        raise ConfigError(f"{onnx_path} is a {what} artifact, not an FP32 edgecrack ONNX model",
                          "pass the run's model.onnx (or the run folder)")
    return m
