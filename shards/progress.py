"""Progress output for long work: a bar on a terminal, a plain line per step elsewhere (logs, CI)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

# rich is imported only where a bar is drawn: it costs every node start ~0.2 s of CPU, and nodes never
# write to a terminal.


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda: progress.advance(task)


@contextmanager
def byte_progress(what: str) -> Iterator[Callable[[int, int], None]]:
    """Yield `update(done, total)` for a transfer: a bar with size and speed on a terminal, else a line
    at every tenth of the total, so a minute-long download is never silent."""
    if not sys.stderr.isatty():
        shown = -1

        def update(done: int, total: int) -> None:
            nonlocal shown
            tenth = 10 * done // total if total else 0
            if tenth > shown:
                shown = tenth
                print(f"{what}: {done / 2**20:.1f} of {total / 2**20:.1f} MiB", file=sys.stderr, flush=True)

        yield update
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(what, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total or None)
