"""`make test` on a fresh machine: tests/system-packages.sh names what the
suite needs and, without the rights to install it, says how and stops."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "system-packages.sh"
NOBODY = 65534


def _as_user_without_sudo(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # An empty dpkg database: to the script, no package is installed.
    admindir = tmp_path / "dpkg"
    admindir.mkdir()
    (admindir / "status").touch()
    env = {"PATH": os.environ["PATH"], "DPKG_ADMINDIR": str(admindir)}
    if os.geteuid() == 0:
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}"]
        command += ["--clear-groups", "bash", str(SCRIPT)]
    else:
        command = ["bash", str(SCRIPT)]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.skipif(
    os.geteuid() != 0 and shutil.which("sudo") is not None,
    reason="needs root (to drop to a user without sudo) or a machine without sudo",
)
def test_without_root_or_sudo_it_names_the_packages_and_exits_2(tmp_path):
    result = _as_user_without_sudo(tmp_path)
    assert result.returncode == 2, result.stderr
    packages = "chromium redis-server nginx postgresql openssl python3-venv"
    assert f"Install them with:\n  sudo apt-get install {packages}\n" in result.stderr
    assert result.stdout == ""


def test_with_everything_installed_it_does_nothing():
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_make_test_and_ci_install_through_the_one_script():
    makefile = (ROOT / "Makefile").read_text()
    assert "deps: ##" in makefile
    assert "\ntest: deps " in makefile
    assert "tests/system-packages.sh" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "apt-get install -y -q make" in ci  # nothing but make itself
    assert "chromium" not in ci and "redis" not in ci
