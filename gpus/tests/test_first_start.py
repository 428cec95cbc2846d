"""First start: `make run` says what it is doing, and the README names every setting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_says_it_installs_packages_before_the_long_pip_install(tmp_path):
    make = shutil.which("make")
    assert make, "make is not installed"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    # A stand-in pip that records when it ran, among the lines make printed.
    pip = venv / "bin" / "pip"
    pip.write_text('#!/bin/sh\necho "PIP RAN $*"\n')
    pip.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    result = subprocess.run(
        [make, "--no-print-directory", f"VENV={venv}", f"{venv}/.installed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    pip_at = next(i for i, line in enumerate(lines) if line.startswith("PIP RAN"))
    assert any("Installing the Python packages" in line for line in lines[:pip_at]), lines
    assert (venv / ".installed").exists()


def test_readme_names_every_setting():
    readme = (ROOT / "README.md").read_text()
    settings = (ROOT / "hikube_portal" / "settings.py").read_text()
    names = set(re.findall(r'env_(?:str|bool|int|float|list)\("([A-Z_]+)"', settings))
    makefile = (ROOT / "Makefile").read_text()
    names |= set(re.findall(r"^([A-Z_]+) \?=", makefile, flags=re.MULTILINE)) - {"VENV", "DEBUG"}
    names.add("TEST_VAR_DIR")
    assert {"PORT", "DEVCLUSTER_PORT", "SECRET_KEY"} <= names
    missing = sorted(n for n in names if f"| `{n}`" not in readme and f", `{n}`" not in readme)
    assert missing == []
