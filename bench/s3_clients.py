"""Which async S3 client for the S3 blob store: obstore against aiobotocore, measured
against a real SeaweedFS on loopback with a 100 MiB object (`.venv/bin/python -m bench.s3_clients`).

Each library is installed alone in its own venv under bench/results/s3-clients/ (what it costs in
dependencies and disk is what that venv holds), and each measurement runs in a fresh process of
that venv (`--worker`), so that its peak RSS is its own: streaming put from a file, put-if-absent
(`If-None-Match: *`) of the same file and whether a second one is refused, streaming get (hashed
as the proxy would verify it), a ranged get, a presigned GET fetched by a plain HTTP client, and
the import and client creation. Medians of --runs runs; a markdown table on stdout and in
bench/results/s3-clients.md. The worker half uses only the standard library and the client under
test.
"""

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LIBRARIES = {"obstore": "obstore", "aiobotocore": "aiobotocore"}  # name: what pip installs
CHUNK = 1 << 20
SMALL_GETS = 300
SMALL = os.urandom(50_000)  # a small wheel
MIB = float(1 << 20)

# ---------------------------------------------------------------------------------------------
# The worker: one library, one operation, in a fresh process; prints one JSON object.


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def _peak_mib() -> float:
    """The process's peak RSS (not getrusage's ru_maxrss: Linux keeps the parent's across exec)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def _fetch_hash(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as answer:
        while chunk := answer.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class _Obstore:
    def __init__(self, env: dict[str, str]) -> None:
        from obstore.store import S3Store

        self.env = env
        settings: dict[str, Any] = {
            "endpoint": env["S3_ENDPOINT"],
            "region": "us-east-1",
            "access_key_id": env["S3_KEY"],
            "secret_access_key": env["S3_SECRET"],
            "virtual_hosted_style_request": False,
            "client_options": {"allow_http": True},
        }
        self.store = S3Store(env["S3_BUCKET"], **settings)
        self.staging = S3Store(env["S3_BUCKET"], copy_if_not_exists="multipart", **settings)

    async def put(self, key: str, path: Path) -> None:
        import obstore

        await obstore.put_async(self.store, key, path)  # multipart past 5 MiB, 12 parts at once

    async def put_if_absent(self, key: str, path: Path) -> None:
        import obstore

        await obstore.put_async(self.store, key, path, mode="create")

    async def put_if_absent_streamed(self, key: str, path: Path) -> None:
        """obstore's create mode is one PUT of the whole body: to stream, put the file to a
        staging key, then copy it where it belongs unless something is there already."""
        import obstore

        staging = f"incoming/{key}"
        await obstore.put_async(self.store, staging, path, max_concurrency=2)
        try:
            await obstore.copy_async(self.staging, staging, key, overwrite=False)
        finally:
            await obstore.delete_async(self.store, staging)

    async def refused(self, key: str) -> bool:
        import obstore

        try:
            await obstore.put_async(self.store, key, b"other bytes", mode="create")
        except obstore.exceptions.AlreadyExistsError:
            return True
        return False

    async def get(self, key: str) -> tuple[int, str]:
        import obstore

        digest, size = hashlib.sha256(), 0
        answer = await obstore.get_async(self.store, key)
        async for chunk in answer.stream(min_chunk_size=CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        import obstore

        return bytes(await obstore.get_range_async(self.store, key, start=start, end=end))

    async def presign(self, key: str) -> str:
        import obstore

        return await obstore.sign_async(self.store, "GET", key, timedelta(minutes=5))

    async def warm(self) -> None:
        import obstore

        await obstore.put_async(self.store, "warm-up", b"x")

    async def close(self) -> None:
        pass


class _Aiobotocore:
    def __init__(self, env: dict[str, str]) -> None:
        import aiobotocore.session
        from botocore.config import Config

        self.env = env
        self.bucket = env["S3_BUCKET"]
        self.factory = aiobotocore.session.get_session().create_client(
            "s3",
            endpoint_url=env["S3_ENDPOINT"],
            region_name="us-east-1",
            aws_access_key_id=env["S3_KEY"],
            aws_secret_access_key=env["S3_SECRET"],
            config=Config(s3={"addressing_style": "path"}),
        )
        self.client: Any = None

    async def warm(self) -> None:
        self.client = await self.factory.__aenter__()
        await self.client.put_object(Bucket=self.bucket, Key="warm-up", Body=b"x")

    async def close(self) -> None:
        await self.factory.__aexit__(None, None, None)

    async def put(self, key: str, path: Path) -> None:
        with path.open("rb") as body:  # one streamed PUT (S3 takes up to 5 GiB so)
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    async def put_if_absent(self, key: str, path: Path) -> None:
        with path.open("rb") as body:
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")

    async def put_if_absent_streamed(self, key: str, path: Path) -> None:
        await self.put_if_absent(key, path)  # the streamed PUT above is conditional already

    async def refused(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await self.client.put_object(
                Bucket=self.bucket, Key=key, Body=b"other bytes", IfNoneMatch="*"
            )
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "PreconditionFailed"
        return False

    async def get(self, key: str) -> tuple[int, str]:
        digest, size = hashlib.sha256(), 0
        answer = await self.client.get_object(Bucket=self.bucket, Key=key)
        async with answer["Body"] as body:
            async for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        answer = await self.client.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
        )
        async with answer["Body"] as body:
            return await body.read()

    async def presign(self, key: str) -> str:
        return await self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=300
        )


async def _many(client: Any, key: str, count: int) -> set[str]:
    """`count` gets of a small object, 10 at a time, as a warm proxy serves small wheels."""
    gate = asyncio.Semaphore(10)

    async def one() -> str:
        async with gate:
            return (await client.get(key))[1]

    return set(await asyncio.gather(*(one() for _ in range(count))))


async def _watch_loop(result: dict[str, Any]) -> None:
    """The longest the event loop was kept from running a 5 ms timer, while `result` is made:
    what the client does on the loop's thread (hashing, signing, copying) instead of off it."""
    result["stall"] = 0.0
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(0.005)
        result["stall"] = max(result["stall"], time.perf_counter() - asked - 0.005)


def worker(library: str, operation: str) -> dict[str, Any]:
    env = dict(os.environ)
    if operation == "python":  # the interpreter alone, the base of the import cost
        return {"rss": _rss_mib()}
    started = time.perf_counter()
    client = {"obstore": _Obstore, "aiobotocore": _Aiobotocore}[library](env)
    imported = time.perf_counter() - started
    if operation == "import":
        return {"seconds": imported, "rss": _rss_mib()}
    return asyncio.run(_operate(client, operation, env))


async def _operate(client: Any, operation: str, env: dict[str, str]) -> dict[str, Any]:
    path, sha256 = Path(env["S3_FILE"]), env["S3_FILE_SHA256"]
    key = f"{operation}-{os.getpid()}"
    await client.warm()
    idle = _rss_mib()
    result: dict[str, Any] = {}

    async def timed(step: Callable[[], Awaitable[Any]]) -> Any:
        watch = asyncio.create_task(_watch_loop(result))
        started = time.perf_counter()
        value = await step()
        result["seconds"] = time.perf_counter() - started
        watch.cancel()
        return value

    if operation == "put":
        await timed(lambda: client.put(key, path))
        result["ok"] = (await client.get(key))[1] == sha256
    elif operation in ("put_if_absent", "put_if_absent_streamed"):
        await timed(lambda: getattr(client, operation)(key, path))
        result["ok"] = (await client.get(key))[1] == sha256 and await client.refused(key)
    elif operation == "get":
        size, digest = await timed(lambda: client.get(env["S3_KEY_READY"]))
        result["ok"] = digest == sha256
        start = size // 3
        with path.open("rb") as original:
            original.seek(start)
            expected = original.read(1000)
        result["ok"] &= await client.get_range(env["S3_KEY_READY"], start, start + 1000) == expected
    elif operation == "small_gets":
        cpu = time.process_time()
        digests = await timed(lambda: _many(client, env["S3_KEY_SMALL"], SMALL_GETS))
        result["cpu_ms"] = (time.process_time() - cpu) * 1000 / SMALL_GETS
        result["ok"] = digests == {env["S3_SMALL_SHA256"]}
    elif operation == "presign":
        url = await client.presign(env["S3_KEY_READY"])
        _, digest = await timed(lambda: asyncio.to_thread(_fetch_hash, url))
        result["ok"] = digest == sha256 and env["S3_SECRET"] not in url
    await client.close()
    return result | {"idle": idle, "peak": _peak_mib()}


# ---------------------------------------------------------------------------------------------
# The harness: venvs, the file, SeaweedFS, the runs, the table.


def _venv(library: str) -> Path:
    """A venv holding the library alone (made once, kept in bench/results/)."""
    venv = RESULTS / "s3-clients" / f"venv-{library}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", LIBRARIES[library]]
        subprocess.run(pip, check=True)
    return python


def _footprint(python: Path) -> dict[str, Any]:
    """The distributions the library brought into its venv, and their size on disk."""
    script = (
        "import importlib.metadata as m, json, pathlib\n"
        "skip = {'pip', 'setuptools', 'wheel'}\n"
        "names, size = [], 0\n"
        "for d in m.distributions():\n"
        "    if d.metadata['Name'].lower() in skip: continue\n"
        "    names.append(d.metadata['Name'])\n"
        "    for f in d.files or []:\n"
        "        p = pathlib.Path(d.locate_file(f))\n"
        "        size += p.stat().st_size if p.is_file() else 0\n"
        "print(json.dumps({'names': sorted(names, key=str.lower), 'mib': size / 2**20}))\n"
    )
    command = [str(python), "-I", "-c", script]  # -I: not the checkout's own metadata
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def _run(python: Path, library: str, operation: str, env: dict[str, str]) -> dict[str, Any]:
    command = [str(python), "-I", str(Path(__file__)), "--worker", library, operation]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        detail = (out.stdout + out.stderr)[-3000:]
        raise RuntimeError(f"{library} {operation} exited with {out.returncode}:\n{detail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(samples: list[dict[str, Any]], name: str) -> float:
    return statistics.median(s[name] for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("LIBRARY", "OPERATION"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return

    sys.path.insert(0, str(ROOT))
    from tests.backing_services import running_seaweedfs

    pythons = {library: _venv(library) for library in LIBRARIES}
    with tempfile.TemporaryDirectory(prefix="s3-clients-") as scratch:
        data = Path(scratch) / "object.bin"
        digest = hashlib.sha256()
        with data.open("wb") as out:
            for _ in range(args.size_mib):
                chunk = os.urandom(1 << 20)
                digest.update(chunk)
                out.write(chunk)
        with running_seaweedfs(Path(scratch) / "seaweedfs") as s3:
            import obstore

            obstore.put(s3.store(), "ready", data)
            obstore.put(s3.store(), "small", SMALL)
            env = {
                "PATH": os.environ.get("PATH", ""),
                "S3_ENDPOINT": s3.endpoint_url,
                "S3_BUCKET": s3.bucket,
                "S3_KEY": s3.access_key_id,
                "S3_SECRET": s3.secret_access_key,
                "S3_FILE": str(data),
                "S3_FILE_SHA256": digest.hexdigest(),
                "S3_KEY_READY": "ready",
                "S3_KEY_SMALL": "small",
                "S3_SMALL_SHA256": hashlib.sha256(SMALL).hexdigest(),
            }
            results = _measure(pythons, env, args.runs)
    report = _report(results, pythons, args)
    print(report)
    (RESULTS / "s3-clients.md").write_text(report)


OPERATIONS = ["put", "put_if_absent", "put_if_absent_streamed", "get", "small_gets", "presign"]


def _measure(
    pythons: dict[str, Path], env: dict[str, str], runs: int
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(runs):
        for library, python in pythons.items():  # interleaved: load changes hit both alike
            for operation in ["python", "import", *OPERATIONS]:
                sample = _run(python, library, operation, env)
                results.setdefault((library, operation), []).append(sample)
                print(f"{library:12} {operation:24} {sample}", file=sys.stderr)
    return results


def _report(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    pythons: dict[str, Path],
    args: argparse.Namespace,
) -> str:
    size = float(args.size_mib)
    libs = list(pythons)
    versions = {lib: _version(pythons[lib], lib) for lib in libs}
    rows = [
        "| | " + " | ".join(f"{lib} {versions[lib]}" for lib in libs) + " |",
        "|---|" + "---|" * len(libs),
    ]

    def row(label: str, cell: Callable[[str], str]) -> None:
        rows.append(f"| {label} | " + " | ".join(cell(lib) for lib in libs) + " |")

    def speed(operation: str) -> Callable[[str], str]:
        def cell(lib: str) -> str:
            samples = results[(lib, operation)]
            ok = all(s["ok"] for s in samples)
            mibs = size / _median(samples, "seconds")
            grown = _median(samples, "peak") - _median(samples, "idle")
            stall = _median(samples, "stall") * 1000
            return f"{mibs:.0f} MiB/s, peak RSS +{grown:.0f} MiB, loop stall {stall:.0f} ms" + (
                "" if ok else " **WRONG**"
            )

        return cell

    row("streaming put from a file", speed("put"))
    row("put-if-absent (`If-None-Match: *`), second refused", speed("put_if_absent"))
    row("put-if-absent, streamed", speed("put_if_absent_streamed"))
    row("streaming get (sha256 on the way), then a ranged get", speed("get"))
    row("presigned GET, fetched by urllib", speed("presign"))

    def small(lib: str) -> str:
        samples = results[(lib, "small_gets")]
        rate = SMALL_GETS / _median(samples, "seconds")
        wrong = "" if all(s["ok"] for s in samples) else " **WRONG**"
        return f"{rate:.0f} req/s, {_median(samples, 'cpu_ms'):.2f} ms CPU each{wrong}"

    row(f"{SMALL_GETS} gets of a {len(SMALL) // 1000} kB object, 10 at a time", small)

    def imported(lib: str) -> str:
        base = _median(results[(lib, "python")], "rss")
        samples = results[(lib, "import")]
        return (
            f"{_median(samples, 'seconds') * 1000:.0f} ms, "
            f"+{_median(samples, 'rss') - base:.0f} MiB RSS"
        )

    row("import + client creation", imported)
    footprints = {lib: _footprint(pythons[lib]) for lib in libs}
    row(
        "installed alone: distributions, disk",
        lambda lib: f"{len(footprints[lib]['names'])}, {footprints[lib]['mib']:.0f} MiB",
    )
    deps = [f"- {lib}: {', '.join(footprints[lib]['names'])}" for lib in libs]
    header = (
        f"### S3 clients against SeaweedFS on loopback ({args.size_mib} MiB object, "
        f"medians of {args.runs} runs, `python -m bench.s3_clients`)\n\n"
        "peak RSS: the worker process's peak above its RSS with the client ready; loop stall:\n"
        "the longest a 5 ms timer on the event loop was late during the operation.\n\n"
    )
    return header + "\n".join(rows) + "\n\nWhat each installs:\n" + "\n".join(deps) + "\n"


def _version(python: Path, library: str) -> str:
    script = f"import importlib.metadata as m; print(m.version({library!r}))"
    command = [str(python), "-I", "-c", script]
    return subprocess.run(command, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
