"""edgecrack.platform: machine facts from one place, and the engine-machine match."""

from __future__ import annotations

import re
from pathlib import Path


import edgecrack
from edgecrack import platform as plat
from edgecrack.artifacts import EngineFacts
from edgecrack.platform import MachineFacts, engine_matches_machine, engine_mismatch

X86 = "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 avx512_vnni\n\n" \
      "processor\t: 1\nphysical id\t: 0\ncore id\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd asimddp\n\nHardware\t: NVIDIA Orin\n"
BUILD = """General configuration for OpenCV 4.10.0 =====================================
  GUI:                           NONE
  Video I/O:
    DC1394:                      NO
    FFMPEG:                      YES
      avcodec:                   YES (59.37.100)
    GStreamer:                   NO
    v4l/v4l2:                    YES (linux/videodev2.h)
  Parallel framework:            pthreads
"""


def test_cpu_facts_from_cpuinfo_text():
    assert plat.cpu_name(X86) == "AMD EPYC 7B13" and plat.cpu_name(ARM) == "NVIDIA Orin"
    assert plat.physical_cores(X86) == 1  # two logical CPUs on one core
    assert plat.cpu_flags(ARM) == {"fp", "asimd", "asimddp"}
    assert plat.int8_isa(plat.cpu_flags(X86), "x86_64").dot_product == "avx512_vnni"
    assert plat.int8_isa({"avx2"}, "x86_64").reduce_range is True
    here = plat.cpu_facts()
    assert here["model"] and here["logical_cores"] >= here["usable_cores"] >= 1


def test_opencv_facts_from_build_information():
    import cv2

    vio = plat.opencv_video_io(BUILD)
    assert vio == {"GStreamer": "NO", "FFMPEG": "YES", "avcodec": "YES (59.37.100)"}
    assert plat.opencv_build_flag("GUI", BUILD) == "NONE"
    assert plat.opencv_build_information() == cv2.getBuildInformation()
    assert plat.opencv_has_gstreamer() == plat.opencv_video_io().get("GStreamer", "NO").upper().startswith("YES")
    assert plat.opencv_has_gui() == ("NONE" not in (plat.opencv_build_flag("GUI") or "NONE"))


def test_engine_mismatch_names_both_sides():
    orin = MachineFacts("10.3.0", "Orin", "8.7")
    facts = EngineFacts(precision="fp16", tensorrt_version="10.3.0.26", gpu_name="Orin", compute_capability="8.7")
    assert engine_mismatch(facts, orin) is None  # the build number does not change the plan format
    assert engine_mismatch(facts, MachineFacts("8.5.2.2", "Orin", "8.7")) == (
        "built with TensorRT 10.3.0.26 on Orin (sm 8.7), this machine has TensorRT 8.5.2.2 on Orin (sm 8.7)")
    assert engine_mismatch(facts, MachineFacts("10.3.0", "Xavier", "7.2")) == (
        "built for TensorRT 10.3.0.26 on Orin (sm 8.7), this machine has TensorRT 10.3.0 on Xavier (sm 7.2)")


def test_engine_matches_machine_here():
    from tiny_onnx import tiny_manifest

    assert "not a TensorRT engine manifest" in engine_matches_machine(tiny_manifest("onnx"))
    why = engine_matches_machine(tiny_manifest("tensorrt", tensorrt_version="10.3.0", gpu_name="Orin",
                                               compute_capability="8.7"))
    if plat.tensorrt_version() is None:
        assert why == "TensorRT is not installed here (the engine needs TensorRT 10.3.0)"
    else:
        assert why is not None and "Orin" in why or "no usable NVIDIA GPU" in why


def test_environment_has_what_reports_need():
    env = plat.environment()
    assert set(env) >= {"cpu", "gpu", "jetson", "versions", "memory_gb", "os", "python", "loadavg"}
    assert env["versions"]["edgecrack"] == edgecrack.__version__ and env["versions"]["opencv"]
    s = plat.machine_summary()
    assert s["cpu"] == env["cpu"]["model"] and set(s) == {"cpu", "cores", "python", "platform", "torch", "onnxruntime",
                                                           "opencv"}


# Machine facts read anywhere else would drift from these: no module but platform.py probes them.
KNOWN_ELSEWHERE: dict[str, set[str]] = {}


def test_machine_facts_have_one_home():
    root = Path(edgecrack.__file__).parent
    probes = ("getBuildInformation", "/proc/cpuinfo", "nv_tegra_release", "--query-gpu", "device-tree/model")
    found = {}
    for path in root.rglob("*.py"):
        if path.name == "platform.py" and path.parent == root:
            continue
        text = path.read_text()
        for p in probes:
            if re.search(re.escape(p), text) and path.name not in KNOWN_ELSEWHERE.get(p, set()):
                found.setdefault(p, []).append(str(path.relative_to(root)))
    assert not found, f"machine facts read outside edgecrack/platform.py: {found}"
