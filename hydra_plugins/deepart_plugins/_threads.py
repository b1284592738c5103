"""Threads of a sweep's launching process (the Ray launcher's runs, the Optuna search's slots)."""
from __future__ import annotations

import threading
from collections.abc import Callable


def run_all(threads: list[threading.Thread], on_interrupt: Callable[[], None]) -> None:
    """Start `threads` and wait for them all. The waits are short joins, so Ctrl-C still reaches this (the main)
    thread; then `on_interrupt` stops what the threads run, and the interrupt goes on."""
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
    except BaseException:
        on_interrupt()
        raise
