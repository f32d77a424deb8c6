"""Prefetch progress: a bar with files, bytes and rate on a terminal, plain lines elsewhere."""

import io

from rich.console import Console

from gitlab_pypi_proxy.offline.prefetch import Outcome, Report
from gitlab_pypi_proxy.offline.progress import BarProgress, PlainProgress, for_terminal


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = for_terminal(out)
    assert isinstance(progress, PlainProgress)
    progress.start(2)
    progress.done(Outcome("a-1.0.tar.gz", "fetched", size=12))
    progress.done(Outcome("b-1.0.tar.gz", "failed", "no source has this file"))
    progress.close()
    assert out.getvalue().splitlines() == [
        "prefetch: 2 files",
        "fetched a-1.0.tar.gz (12 bytes)",
        "failed b-1.0.tar.gz: no source has this file",
    ]


def test_bar_shows_files_bytes_and_rate_on_a_terminal() -> None:
    out = io.StringIO()
    progress = BarProgress(Console(file=out, force_terminal=True, width=120))
    progress.start(3)
    progress.advance(1_500_000)
    progress.done(Outcome("a-1.0.tar.gz", "fetched", size=1_500_000))
    progress.done(Outcome("b-1.0.tar.gz", "failed", "no source has this file"))
    progress.close()
    text = out.getvalue()
    assert "2/3 files" in text
    assert "1.5 MB" in text
    assert "/s" in text
    assert "failed b-1.0.tar.gz: no source has this file" in text


def test_summary_says_yes_only_when_nothing_is_missing() -> None:
    complete = Report([Outcome("a", "cached"), Outcome("b", "fetched", size=5)])
    assert complete.summary() == [
        "already cached: 1",
        "fetched: 1 (5 bytes)",
        "failed: 0",
        "offline-complete: yes",
    ]
    assert complete.complete
    broken = Report([Outcome("a", "cached"), Outcome("b", "failed", "gone")])
    assert broken.summary()[-2:] == ["  b: gone", "offline-complete: no (1 missing)"]
    assert not broken.complete
