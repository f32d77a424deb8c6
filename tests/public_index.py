"""A real public-style index this project did not write: pypiserver on loopback, as a subprocess."""

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

from tests.proxy_process import free_port
from tests.waiting import wait_until

_STARTUP_SECONDS = 30


@dataclass
class PublicIndex:
    url: str  # the simple index URL, ending in "/"
    directory: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Stop serving; afterwards a connection to the port is refused."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def add(self, filename: str, data: bytes) -> None:
        (self.directory / filename).write_bytes(data)


@contextmanager
def pypiserver(directory: Path) -> Iterator[PublicIndex]:
    """Serve the wheels in `directory`; no fallback to the real public index (nothing leaves
    loopback), sha256 fragments on every link."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = directory.parent / f"pypiserver-{port}.log"
    command = [sys.executable, "-m", "pypiserver", "run", "-p", str(port), "-i", "127.0.0.1"]
    command += ["--disable-fallback", "--hash-algo", "sha256", "--backend", "simple-dir"]
    command += ["-v", str(directory)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    index = PublicIndex(f"http://127.0.0.1:{port}/simple/", directory, log_path, process)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"pypiserver exited with {process.returncode}:\n{index.log()}")
        try:
            return httpx2.get(index.url, timeout=1).status_code == 200
        except httpx2.TransportError:
            return False

    try:
        try:
            wait_until(answers, "pypiserver answering", _STARTUP_SECONDS)
        except AssertionError:
            raise RuntimeError(f"pypiserver did not start:\n{index.log()}") from None
        yield index
    finally:
        index.stop()
