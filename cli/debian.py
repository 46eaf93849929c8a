"""Debian packages that local tools need (headless Chromium for the browser tests, HAProxy
for the rollout rehearsal), installed with apt-get when missing, where that is possible.

Never a download of our own: the machine's package manager, as root, or a clear reason why
not, for the caller to skip with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

APT_TIMEOUT = 900.0


def install_hint(package: str) -> str:
    return f"apt-get install -y --no-install-recommends {package}  (as root, Debian)"


def apt_install(package: str, binary: Path) -> str | None:
    """Install a Debian package so that `binary` exists; None on success, else why not."""
    if binary.exists():
        return None
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install it"
    if shutil.which("apt-get") is None:
        return "apt-get is not available on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
    )
    for argv in steps:
        try:
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(argv)}` did not finish within {APT_TIMEOUT:.0f}s"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"`{' '.join(argv)}` failed ({done.returncode}): {' / '.join(tail)}"
    return None if binary.exists() else f"apt-get succeeded but {binary} is still missing"
