"""The one-machine default loads neither obstore nor redis-py (every worker's
memory counts); a configuration with [storage]/[cluster] loads them."""

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from gitlab_pypi_proxy.config import load
from gitlab_pypi_proxy.storage.stores import Stores
stores = Stores.open(load(sys.argv[1]))
kinds = [part.kind for part in stores.shared]
stores.close()
print(json.dumps({"obstore": "obstore" in sys.modules, "redis": "redis" in sys.modules,
                  "shared": kinds}))
"""


def _probe(tmp_path: Path, text: str) -> dict:
    config = tmp_path / "proxy.toml"
    config.write_text(f'[cache]\ndirectory = "{tmp_path / "cache"}"\n{text}')
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_one_machine_loads_neither(tmp_path: Path) -> None:
    assert _probe(tmp_path, "") == {"obstore": False, "redis": False, "shared": []}


def test_a_cluster_configuration_loads_both(tmp_path: Path) -> None:
    text = """
[storage]
backend = "s3"
endpoint_url = "http://127.0.0.1:9"
bucket = "pypi-proxy"
access_key_id = "AKID"
secret_access_key = "secret"
[cluster]
redis_url = "redis://127.0.0.1:9/0"
"""
    assert _probe(tmp_path, text) == {"obstore": True, "redis": True, "shared": ["s3", "redis"]}
