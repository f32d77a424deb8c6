"""Small file systems for disk fault tests, mounted by the test and always unmounted after it.

A tmpfs to fill up, and an ext4 image on a loop device that the kernel turns read-only under
running processes, as it does when a disk fails (`errors=remount-ro`): a plain
`mount -o remount,ro` refuses while any file is open for writing, as the proxy's are. Needs root,
as CI has.
"""

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

_BLOCK = 1 << 20


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True)  # still held open


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "32m") mounted at `path` while the block runs."""
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def ext4_image(path: Path, size: str) -> Iterator[Path]:
    """An ext4 file system of `size` in an image file beside `path`, mounted at `path`."""
    image = path.with_name(path.name + ".img")
    _run("truncate", "-s", size, str(image))
    _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    path.mkdir(parents=True, exist_ok=True)
    try:
        _run("mount", "-o", "loop,errors=remount-ro", str(image), str(path))
        try:
            yield path
        finally:
            _unmount(path)  # the loop device goes with the mount (autoclear)
    finally:
        image.unlink(missing_ok=True)


def turn_read_only(path: Path) -> None:
    """Make the ext4 file system mounted at `path` read-only now, open files or not."""
    device = Path(_run("findmnt", "--noheadings", "--output", "SOURCE", str(path)).strip()).name
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("disk fault test\n")
    try:
        (path / "probe").touch()
    except OSError as exc:
        assert exc.errno == errno.EROFS, exc
    else:
        raise AssertionError(f"{path} is still writable")


def fill(directory: Path) -> Path:
    """Write zeros into a new file in `directory` until its file system has no byte left."""
    filler = directory / f"filler-{len(list(directory.glob('filler-*')))}"
    with filler.open("wb", buffering=0) as handle:
        for block in (_BLOCK, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler
