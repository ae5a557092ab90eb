"""The wheel works outside the checkout: its prompts ship inside the package, so a `generate --dry-run`
from an installed wheel reports the same program and prompt hashes as the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from r2r_synth.teacher.programs import load_program

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, **kw)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res


@pytest.mark.slow
def test_an_installed_wheel_uses_the_same_prompts_as_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    # --no-build-isolation: build with this venv's setuptools (no download); --no-deps: just our wheel.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)])
    wheel = next(dist.glob("r2r_synth-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"r2r_synth/prompts/direct.md", "r2r_synth/prompts/comparison.md"} <= set(names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    # The dependencies come from this test's environment (a path entry only: its .pth files, among
    # them the checkout's editable install, are not processed), so only r2r_synth is the wheel's.
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = _run([str(py), "-c", "import r2r_synth; print(r2r_synth.__file__)"], cwd=tmp_path).stdout
    assert where.startswith(str(site)), where

    sample = REPO / "examples" / "sample_candidates.jsonl"
    out = _run([str(venv / "bin" / "r2r-synth"), "generate", "--input", str(sample), "--out", "run", "--dry-run"],
               cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}).stderr
    for name in ("direct", "comparison"):
        p = load_program(name, programs_dir=tmp_path / "no-programs")
        m = re.search(rf"{name} program / prompt hash\W+(\w+) / (\w+)", out)
        assert m, out
        assert (m.group(1), m.group(2)) == (p.program_hash, p.prompt_hash)
    assert not (tmp_path / "run").exists()
