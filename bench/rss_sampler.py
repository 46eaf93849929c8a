"""Peak RSS of a process while a block runs, for the bench scripts (run as `python bench/x.py`,
which puts this directory first on the import path)."""

from __future__ import annotations

import threading
import time

import psutil


class RssSampler:
    """Samples the process's RSS from a thread every `interval` seconds; `peak` is the most
    seen between entering and leaving the block."""

    def __init__(self, pid: int, interval: float) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
