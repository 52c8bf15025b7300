"""Progress output for long work: a bar on a terminal, a plain line per step elsewhere (logs, CI)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress_bar(what: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield an `advance()` callable; output goes to stderr so stdout stays parseable."""
    if not sys.stderr.isatty():
        done = 0

        def advance() -> None:
            nonlocal done
            done += 1
            if done == total or done % max(1, total // 4) == 0:
                print(f"{what}: {done}/{total}", file=sys.stderr, flush=True)

        yield advance
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda: progress.advance(task)
