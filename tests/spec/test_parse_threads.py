"""Definitions are parsed by hundreds of loop threads at once: one thread's parse must not break another's."""

import gc
import threading
from collections.abc import Callable

from scheduler.spec.notebooks import Source

CODE = (
    "def main():\n    pass\n" + "def f(a, b):\n    return [i for i in range(a) if i % b]\n" * 100
).encode()


def deeper(depth: int, then: Callable[[], object]) -> None:
    """Call ``then`` ``depth`` frames further down (the AST constructor's depth starts from there)."""
    if depth:
        deeper(depth - 1, then)
    else:
        then()


def test_a_parse_in_another_thread_during_a_garbage_collection_does_not_break_this_one() -> None:
    """Every garbage collection in the main thread's parses hands the GIL to a second thread for one
    whole parse of its own (from a deeper stack), as a busy scheduler's thread switches may; without
    the parses taking turns CPython 3.11 fails the first one with "AST constructor recursion depth
    mismatch". With them taking turns the second thread's parse waits, and the hand-over times out."""
    go, done, stop = threading.Event(), threading.Event(), threading.Event()
    main = threading.get_ident()
    errors: list[BaseException] = []
    handovers = [0]  # in the current parse of the main thread: a few are enough

    def other() -> None:
        while not stop.is_set():
            if go.wait(0.05):
                go.clear()
                try:
                    deeper(40, lambda: Source("other.py", CODE))
                except BaseException as error:
                    errors.append(error)
                done.set()

    def hand_over(phase: str, _info: dict[str, int]) -> None:
        if phase == "start" and threading.get_ident() == main and handovers[0] < 3:
            handovers[0] += 1
            done.clear()
            go.set()
            done.wait(0.02)  # releases the GIL: the other thread parses now, unless it must wait its turn

    helper = threading.Thread(target=other, daemon=True)
    helper.start()
    threshold = gc.get_threshold()
    gc.set_threshold(100)
    gc.callbacks.append(hand_over)
    try:
        for _ in range(10):
            handovers[0] = 0
            Source("code/t.py", CODE)
    finally:
        gc.callbacks.remove(hand_over)
        gc.set_threshold(*threshold)
        stop.set()
        helper.join(10)
    assert errors == []
