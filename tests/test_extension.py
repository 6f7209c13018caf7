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
    text = CliRunner().invoke(main, ["info"])
    assert text.exit_code == 0 and "compiled backends" in text.output


def test_cuda_backend_present_when_toolkit_was_used():
    # A build with CUDA_HOME set must contain the CUDA kernels (CI builds with the toolkit).
    info = easyhard._extension.build_info()
    if not info.get("with_cuda"):
        pytest.skip("extension was built CPU-only")
    from easyhard import ops

    assert ops.has_kernel("accumulate_stats", "CUDA")
