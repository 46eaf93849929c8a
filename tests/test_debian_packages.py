"""`cli.debian.apt_install`: what the browser tests (Chromium) and the rollout rehearsal
(HAProxy) use to get a Debian package, or a reason to skip with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cli import debian


def test_a_present_binary_needs_no_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_apt(*args: object, **kwargs: object) -> None:
        raise AssertionError("apt-get was run")

    monkeypatch.setattr(debian.subprocess, "run", no_apt)
    assert debian.apt_install("python3", Path(sys.executable)) is None


def test_without_root_a_missing_package_gives_the_reason_and_the_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(debian.os, "geteuid", lambda: 1000)
    assert debian.apt_install("haproxy", tmp_path / "haproxy") == (
        "not root, so apt-get cannot install it"
    )
    assert debian.install_hint("haproxy").startswith("apt-get install -y")
