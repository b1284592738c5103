"""Threads of a sweep's launching process (the Ray launcher's runs, the Optuna search's slots), and Ctrl-C."""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


def run_all(threads: list[threading.Thread], on_interrupt: Callable[[], None],
            stop_now: Callable[[], None] | None = None) -> None:
    """Start `threads` and wait for them all. The waits are short joins, so Ctrl-C still reaches this (the main)
    thread; then `on_interrupt` asks what the threads run to stop (their runs end as interrupted runs do: KILLED in
    their loggers), the threads are waited for, and the interrupt goes on. A second Ctrl-C while they end calls
    `stop_now` (stop at once) and goes on."""
    for thread in threads:
        thread.start()
    try:
        _join(threads)
    except BaseException:
        on_interrupt()
        try:
            _join(threads)
        except BaseException:
            if stop_now is not None:
                stop_now()
            raise
        raise


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.2)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Ctrl-C held back until the block ends (in the main thread; elsewhere a no-op), so that a write the block
    makes (a trial told to the study's journal) is never cut in half."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt
