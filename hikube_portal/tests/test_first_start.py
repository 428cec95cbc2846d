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


def test_make_run_keeps_to_var_dir_and_its_ports(tmp_path):
    """A second `make run` on other ports and another VAR_DIR (as the README's table allows) writes
    devcluster's kubeconfig where the portal reads it, and scrapes its own devcluster, not :6443."""
    make = shutil.which("make")
    assert make, "make is not installed"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls"
    # Stand-ins for python and celery that record their arguments and the settings they would see.
    stub = (
        "#!/bin/sh\n"
        'echo "$(basename $0) $* VAR_DIR=$VAR_DIR SD=$METRICS_SD_URL'
        f' AGENT=$METRICS_AGENT_URL" >> {calls}\n'
        'case "$*" in *"devcluster serve"*) echo "listening on";; esac\n'
    )
    for name in ("python", "celery"):
        (venv / "bin" / name).write_text(stub)
        (venv / "bin" / name).chmod(0o755)
    (venv / ".installed").touch()
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "METRICS_"))}
    env["VAR_DIR"] = str(var)
    result = subprocess.run(
        [
            make,
            "--no-print-directory",
            f"VENV={venv}",
            "PORT=18001",
            "DEVCLUSTER_PORT=18002",
            "run",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The stand-ins exit at once, so the exit trap's kill fails: only what ran matters here.
    lines = calls.read_text().splitlines()
    serve = next(line for line in lines if "devcluster serve" in line)
    assert f"--kubeconfig-out {var}/devcluster/kubeconfig" in serve
    assert f"--state {var}/devcluster/state.json" in serve
    assert (var / "log" / "devcluster.log").exists()
    run = lines[lines.index(serve) :]
    # The background celery stand-ins may be killed before they write; the foreground ones are not.
    for step in ("register_cluster", "sync_inventory", "runserver 127.0.0.1:18001"):
        assert any(step in line for line in run), run
    for line in run:
        assert f"VAR_DIR={var} " in line
        assert "SD=http://127.0.0.1:18002/dcgm/targets?include=vms " in line
        assert line.endswith("AGENT=http://127.0.0.1:18001/metrics/agent/")
    assert f"kubectl --kubeconfig {var}/devcluster/kubeconfig" in result.stdout
