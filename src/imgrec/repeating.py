"""A task repeated in the background while a block runs: the heartbeats of MLflow runs and Optuna trials."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def repeating(action: Callable[[], None], interval: float, name: str, at_start: bool = False) -> Iterator[None]:
    """Call `action` every `interval` seconds (and once at once if `at_start`) in a daemon thread while the
    block runs; the thread is stopped and joined when the block ends, however it ends."""
    stop = threading.Event()

    def loop() -> None:
        if at_start:
            action()
        while not stop.wait(interval):
            action()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
