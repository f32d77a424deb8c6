"""Progress of a prefetch: a rich bar (files, bytes, rate) on a terminal, plain lines otherwise."""

import sys
import time
from typing import TYPE_CHECKING, Protocol, TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar

if TYPE_CHECKING:
    from gitlab_pypi_proxy.offline.prefetch import Outcome


class Progress(Protocol):
    def start(self, files: int) -> None: ...

    def advance(self, received: int) -> None:
        """`received` more bytes arrived from an upstream."""
        ...

    def done(self, outcome: "Outcome") -> None: ...

    def close(self) -> None: ...


class PlainProgress:
    """One line per file, for logs and CI."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def start(self, files: int) -> None:
        print(f"prefetch: {files} files", file=self.out, flush=True)

    def advance(self, received: int) -> None:
        pass

    def done(self, outcome: "Outcome") -> None:
        detail = f": {outcome.reason}" if outcome.reason else ""
        if outcome.status == "fetched":
            detail = f" ({outcome.size} bytes)"
        print(f"{outcome.status} {outcome.label}{detail}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class BarProgress:
    """A live bar on the terminal: files done of total, bytes received, transfer rate."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = RichBar(
            TextColumn("prefetch"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} files"),
            TextColumn("{task.fields[received]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.received = 0
        self.started = time.monotonic()

    def start(self, files: int) -> None:
        self.started = time.monotonic()
        self.task = self.bar.add_task("prefetch", total=files, received="0 bytes", rate="")
        self.bar.start()

    def advance(self, received: int) -> None:
        self.received += received
        elapsed = max(time.monotonic() - self.started, 1e-3)
        if self.task is not None:
            self.bar.update(
                self.task,
                received=decimal(self.received),
                rate=f"{decimal(int(self.received / elapsed))}/s",
            )

    def done(self, outcome: "Outcome") -> None:
        if outcome.status == "failed":
            line = f"failed {outcome.label}: {outcome.reason}"
            self.bar.console.print(line, markup=False, highlight=False)
        if self.task is not None:
            self.bar.advance(self.task)

    def close(self) -> None:
        self.bar.stop()


def for_terminal(out: TextIO = sys.stdout) -> Progress:
    """The bar when `out` is a terminal, plain lines when it is a pipe or a file."""
    if out.isatty():
        return BarProgress(Console(file=out))
    return PlainProgress(out)
