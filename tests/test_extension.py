"""Tests of the package's import checks and the `easyhard info` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import easyhard
from easyhard.cli import main

PKG = os.path.dirname(easyhard.__file__)


def copy_package(dest, *, with_extension: bool):
    target = dest / "easyhard"
    target.mkdir()
    for name in os.listdir(PKG):
        if (
            name.endswith(".py")
            or name == "_build_info.json"
            or (with_extension and name.endswith(".so"))
        ):
            shutil.copy(os.path.join(PKG, name), target / name)
    return target


def import_in(path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run(
        [sys.executable, "-c", "import easyhard; import easyhard.ops"],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_extension_says_how_to_rebuild(tmp_path):
    copy_package(tmp_path, with_extension=False)
    proc = import_in(tmp_path)
    assert proc.returncode != 0
    assert "easyhard._C is missing" in proc.stderr
    assert "pip install --no-build-isolation" in proc.stderr


def test_mismatched_torch_says_how_to_rebuild(tmp_path):
    pkg = copy_package(tmp_path, with_extension=True)
    (pkg / "_build_info.json").write_text(json.dumps({"torch_version": "2.4.0+cu121"}))
    proc = import_in(tmp_path)
    assert proc.returncode != 0
    assert "built against torch 2.4.0+cu121" in proc.stderr
    assert "pip install --no-build-isolation" in proc.stderr


def test_help_does_not_import_torch():
    code = "import sys, easyhard.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_info_reports_versions_and_backends():
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    import torch

    assert report["easyhard"] == easyhard.__version__
    assert report["torch"] == torch.__version__
    assert "CPU" in report["extension"]["backends"]
    assert report["extension"]["torch_version"] == torch.__version__
    ext = report["extension"]
    assert ext["cpu_capabilities"][0] == "baseline"
    assert ext["cpu_capability"] == ext["cpu_capabilities"][-1]  # the best, unless forced
    text = CliRunner().invoke(main, ["info"])
    assert text.exit_code == 0 and "compiled backends" in text.output
    assert f"CPU kernels          {ext['cpu_capability']} (this CPU runs" in text.output
    if easyhard._extension.build_info().get("with_cuda"):  # says which, or how to get them
        assert f"CUDA kernels         CUDA {ext['cuda_version']}, archs" in text.output
    else:
        assert "CUDA kernels         not built (a CPU-only build: FORCE_CUDA=1 pip install" in (
            text.output
        )


def test_cuda_backend_present_when_toolkit_was_used():
    # A build with CUDA_HOME set must contain the CUDA kernels (CI builds with the toolkit).
    info = easyhard._extension.build_info()
    if not info.get("with_cuda"):
        pytest.skip("extension was built CPU-only")
    from easyhard import ops

    assert ops.has_kernel("accumulate_stats", "CUDA")


def test_cuda_kernels_are_built_where_they_run_or_when_forced():
    from easyhard._extension import want_cuda

    home = "/usr/local/cuda"
    assert want_cuda({}, "13.0", home, gpu_visible=True)[0]
    # no GPU: CPU-only by default (torchvision's rule), the kernels when FORCE_CUDA=1 asks
    off, why = want_cuda({}, "13.0", home, gpu_visible=False)
    assert not off and "FORCE_CUDA=1" in why
    assert want_cuda({"FORCE_CUDA": "1"}, "13.0", home, gpu_visible=False)[0]
    assert not want_cuda({"FORCE_CUDA": "1"}, "13.0", None, gpu_visible=False)[0]
    assert not want_cuda({"EASYHARD_CUDA": "0"}, "13.0", home, gpu_visible=True)[0]
    assert not want_cuda({"FORCE_CUDA": "1"}, None, home, gpu_visible=True)[0]


def test_build_digest_follows_sources_plan_and_settings(tmp_path):
    from easyhard._extension import build_digest

    for rel in ("setup.py", "pyproject.toml", "csrc/easyhard.cpp", "csrc/cpu/op.cpp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    plan = {"torch_version": "2.14.1", "with_cuda": False}
    first = build_digest(str(tmp_path), plan, {})
    assert build_digest(str(tmp_path), plan, {}) == first
    (tmp_path / "csrc" / "cpu" / "op.cpp").write_text("changed")
    changed = build_digest(str(tmp_path), plan, {})
    assert changed != first
    (tmp_path / "csrc" / "cpu" / "new.h").write_text("")
    assert build_digest(str(tmp_path), plan, {}) != changed
    assert build_digest(str(tmp_path), {**plan, "with_cuda": True}, {}) != changed
    assert build_digest(str(tmp_path), plan, {"CXXFLAGS": "-O0"}) != changed
    (tmp_path / "README.md").write_text("not a build input")
    assert build_digest(str(tmp_path), plan, {"PATH": "/x"}) == build_digest(
        str(tmp_path), plan, {}
    )


def test_the_test_command_leaves_a_build_it_would_not_redo():
    """After tests/run.sh built the checkout, its up-to-date check passes: a second run of the
    test command rebuilds nothing (skipped when easyhard is not an editable install of it)."""
    from easyhard._extension import stale_reason

    root = os.path.dirname(PKG)
    if not os.path.exists(os.path.join(root, "setup.py")):
        pytest.skip("easyhard is not installed from a source checkout")
    reason = stale_reason(root, os.environ)
    if reason and ("editable" in reason or "not from this checkout" in reason):
        pytest.skip(reason)
    assert reason is None, f"{reason}: these tests ran against a stale build (bash tests/run.sh)"


def test_a_cuda_tensor_on_a_cpu_only_build_says_how_to_rebuild(monkeypatch):
    import torch

    from easyhard import ops

    monkeypatch.setitem(ops._CUDA_KERNELS, "accumulate_stats", False)
    with pytest.raises(RuntimeError) as e:
        ops._require_kernel("accumulate_stats", torch.device("cuda", 0))
    assert "built without its CUDA kernels" in str(e.value)
    assert "FORCE_CUDA=1 pip install --no-build-isolation" in str(e.value)
    ops._require_kernel("accumulate_stats", torch.device("cpu"))  # the CPU is always there
