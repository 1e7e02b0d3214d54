"""pyproject.toml: installing edgecrack prints no setuptools deprecation notice."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_string_and_setuptools_reads_it_without_warnings():
    tomllib = pytest.importorskip("tomllib")
    setuptools = pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    cfg = tomllib.loads(PYPROJECT.read_text())
    assert cfg["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in cfg["build-system"]["requires"]  # the first release that reads SPDX strings
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} here predates SPDX license strings")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), PYPROJECT)
    assert dist.metadata.license_expression == "Apache-2.0"
    assert not [str(w.message) for w in caught if "license" in str(w.message).lower()]


def test_editable_install_uses_a_plain_pth_file(monkeypatch, tmp_path):
    """`make install` (pip install -e) printed setuptools' "Editable installation" warning box:
    the flat layout spelled out (package-dir) makes setuptools pick a plain .pth file instead."""
    pytest.importorskip("tomllib")
    pytest.importorskip("setuptools")
    from setuptools.command import editable_wheel
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(PYPROJECT.parent)
    cmd = editable_wheel.editable_wheel(apply_configuration(Distribution(), PYPROJECT))
    cmd.ensure_finalized()
    strategy = cmd._select_strategy("edgecrack", "py3-none-any", str(tmp_path))
    assert type(strategy).__name__ == "_StaticPth"
    assert [p.resolve() for p in strategy.path_entries] == [PYPROJECT.parent]
