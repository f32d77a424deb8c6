"""deploy/: the compose file passes the compose-spec schema, the Kubernetes manifests pass the
Kubernetes schemas (strict), and both say what a cluster of this proxy needs: replicas built from
the repository's Dockerfile sharing one bucket and one Redis, the issue's [storage] and [cluster]
names, probes on /healthz and /readyz, secrets from the environment only. Each schema check is
also run on a broken copy, which it must refuse."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from gitlab_pypi_proxy import config


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in version.split("."))


def _latest() -> str:
    return kubernetes_validate.utils.latest_version()


ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
MANIFESTS = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
# the oldest and the newest Kubernetes whose schemas kubernetes-validate ships
KUBERNETES_VERSIONS = sorted(
    {min(kubernetes_validate.utils.all_versions(), key=_release), _latest()}, key=_release
)

# the keys of the [storage] table, a contract
STORAGE_KEYS = {
    "backend",
    "endpoint_url",
    "bucket",
    "prefix",
    "region",
    "access_key_id",
    "secret_access_key",
    "redirect",
}
STORAGE_REQUIRED = {"backend", "bucket", "prefix", "access_key_id", "secret_access_key"}
CLUSTER_KEYS = {"redis_url"}
SECRETS = {"GITLAB_TOKEN", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _kubernetes() -> dict[str, dict[str, Any]]:
    """Every manifest by kind (one of each)."""
    docs = [d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "two manifests of one kind"
    return by_kind


def _check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    checker = Path(sys.executable).with_name("check-jsonschema")
    command = [str(checker), "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+)", text))


def _config_loads(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Check a deployment's proxy config: [storage] and [cluster] hold the issue's names, and the
    rest is a configuration this proxy loads. Returns the parsed TOML."""
    document = tomllib.loads(text)
    storage, cluster = document["storage"], document["cluster"]
    assert STORAGE_REQUIRED <= set(storage) <= STORAGE_KEYS
    assert storage["backend"] == "s3"
    assert storage["prefix"].endswith("/")
    assert set(cluster) == CLUSTER_KEYS
    assert urlsplit(_expand(cluster["redis_url"])).scheme in ("redis", "rediss", "")
    # a secret written into the file would be a leak: they come from the environment
    for key in ("access_key_id", "secret_access_key"):
        assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", storage[key]), key
    assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", document["gitlab"]["token"])

    for name in _variables(text):
        value = "https://gitlab.example.com" if name.endswith("URL") else "x"
        monkeypatch.setenv(name, "redis://redis.example:6379/0" if name == "REDIS_URL" else value)
    path = tmp_path / "config.toml"
    path.write_text(text)
    loaded = config.load(path)
    assert loaded.sources and loaded.server.host == "0.0.0.0"
    assert loaded.storage.backend == "s3" and loaded.storage.bucket == storage["bucket"]
    assert loaded.storage.access_key_id == "x" and loaded.cluster.redis_url
    return document


def _expand(value: str) -> str:
    return "" if re.fullmatch(r"\$\{[A-Z0-9_]+\}", value) else value


# --- compose ----------------------------------------------------------------------------------


def test_compose_file_passes_the_compose_spec_schema() -> None:
    checked = _check_compose_schema(DEPLOY / "compose.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ("    image: redis:7-alpine", "    imag: redis:7-alpine"),
        ("condition: service_healthy", "condition: service_is_healthy"),
        ('    ports:\n      - "8080:80"', '    ports: "8080:80"'),  # a list, not a string
    ],
)
def test_the_compose_check_refuses_a_broken_file(
    tmp_path: Path, original: str, broken: str
) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert original in text
    copy = tmp_path / "compose.yaml"
    copy.write_text(text.replace(original, broken, 1))
    assert _check_compose_schema(copy).returncode != 0


def test_compose_replicas_share_one_bucket_and_one_redis_behind_the_balancer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = _compose()
    services = compose["services"]
    replicas = {name: s for name, s in services.items() if name.startswith("proxy-")}
    assert len(replicas) == 2

    for replica in replicas.values():
        build = replica["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
        assert [c["source"] for c in replica["configs"]] == ["proxy-config"]  # one file for both
        assert replica["configs"][0]["target"] == _dockerfile_config_path()
        assert replica["environment"]["GITLAB_PYPI_PROXY_CONFIG"] == _dockerfile_config_path()
        assert replica["depends_on"]["redis"]["condition"] == "service_healthy"
        assert replica["depends_on"]["bucket"]["condition"] == "service_completed_successfully"
    caches = [r["volumes"][0].split(":")[0] for r in replicas.values()]
    assert len(set(caches)) == 2  # each its own cache volume
    assert all(c in compose["volumes"] for c in caches)

    config_text = (DEPLOY / compose["configs"]["proxy-config"]["file"]).read_text()
    document = _config_loads(config_text, tmp_path, monkeypatch)
    assert document["cache"]["directory"] == replicas["proxy-1"]["volumes"][0].split(":")[1]

    # the bucket and Redis the config names are services of this file, on the ports they serve
    s3 = urlsplit(document["storage"]["endpoint_url"])
    weed = services[s3.hostname]["command"]
    assert f"-s3.port={s3.port}" in weed and "-s3" in weed
    bucket_job = " ".join(services["bucket"]["command"])
    assert f"s3.bucket.create -name {document['storage']['bucket']}" in bucket_job
    identities = compose["configs"]["s3-identities"]["content"]
    assert "${S3_ACCESS_KEY_ID}" in identities and "${S3_SECRET_ACCESS_KEY}" in identities
    redis_url = urlsplit(document["cluster"]["redis_url"])
    assert redis_url.hostname in services and "redis" in services[redis_url.hostname]["image"]

    # every variable the config reads is given to both replicas; secrets only from the host
    environment = replicas["proxy-1"]["environment"]
    assert _variables(config_text) <= set(environment)
    for name in SECRETS:
        assert environment[name].startswith(f"${{{name}"), name

    # nginx balances over both replicas on the port the config listens on
    nginx = services["nginx"]
    nginx_conf = (DEPLOY / compose["configs"]["nginx-config"]["file"]).read_text()
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", nginx_conf, re.M)
    assert sorted(upstreams) == [(name, str(document["server"]["port"])) for name in replicas]
    assert nginx["ports"] and set(replicas) <= set(nginx["depends_on"])


# --- one proxy on local disk, nginx sending the cached files ---------------------------------

SINGLE = DEPLOY / "single"


def test_single_machine_compose_file_passes_the_compose_spec_schema() -> None:
    checked = _check_compose_schema(SINGLE / "compose.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_single_machine_nginx_sends_cached_files_from_the_proxys_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = yaml.safe_load((SINGLE / "compose.yaml").read_text())
    proxy, nginx = compose["services"]["proxy"], compose["services"]["nginx"]
    build = proxy["build"]
    assert (SINGLE / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert proxy["configs"][0]["target"] == _dockerfile_config_path()

    config_text = (SINGLE / compose["configs"]["proxy-config"]["file"]).read_text()
    for name in _variables(config_text):
        assert name in proxy["environment"], name
        monkeypatch.setenv(name, "https://gitlab.example.com" if name.endswith("URL") else "x")
    path = tmp_path / "config.toml"
    path.write_text(config_text)
    loaded = config.load(path)
    assert loaded.storage.backend == "local" and loaded.server.accel_redirect
    cache = str(loaded.cache.directory)

    # nginx reads the proxy's cache volume, read-only, as the user the proxy writes it as
    (volume,) = proxy["volumes"]
    name, target = volume.split(":")
    assert target == cache and name in compose["volumes"]
    assert nginx["volumes"] == [f"{name}:{cache}:ro"]
    uid = re.search(r"^USER (\d+:\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert uid and nginx["user"] == uid.group(1)

    # its internal location is the prefix the proxy sends, aliasing the cache's files/
    nginx_conf = (SINGLE / compose["configs"]["nginx-config"]["file"]).read_text()
    location = re.search(
        rf"location {re.escape(loaded.server.accel_redirect)} \{{(.*?)\}}", nginx_conf, re.S
    )
    assert location, nginx_conf
    assert re.search(r"^\s*internal;", location.group(1), re.M)
    assert f"alias {cache}/files/;" in location.group(1)
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", nginx_conf, re.M)
    assert upstreams == [("proxy", str(loaded.server.port))]
    listen = re.search(r"^\s*listen (\d+);", nginx_conf, re.M)
    assert listen and any(p.endswith(f":{listen.group(1)}") for p in nginx["ports"])


def _dockerfile_config_path() -> str:
    """The configuration file the image's commands read: its GITLAB_PYPI_PROXY_CONFIG."""
    (path,) = re.findall(r"GITLAB_PYPI_PROXY_CONFIG=(\S+)", (ROOT / "Dockerfile").read_text())
    return path


# --- Kubernetes -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_passes_the_schema_strictly(manifest: Path, version: str) -> None:
    for document in yaml.safe_load_all(manifest.read_text()):
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ("          readinessProbe:", "          readynessProbe:"),  # unknown field
        ("              port: http\n", "              port: [http]\n"),  # wrong type
        ("  replicas: 2", '  replicas: "two"'),
    ],
)
def test_the_kubernetes_check_refuses_a_broken_manifest(original: str, broken: str) -> None:
    text = (KUBERNETES / "deployment.yaml").read_text()
    assert original in text
    document = yaml.safe_load(text.replace(original, broken, 1))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, _latest(), strict=True)


def test_kubernetes_deployment_probes_resources_config_and_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = _kubernetes()
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]

    deployment, service = manifests["Deployment"], manifests["Service"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )
    (container,) = pod["containers"]

    text = manifests["ConfigMap"]["data"]["config.toml"]
    document = _config_loads(text, tmp_path, monkeypatch)
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert port["containerPort"] == document["server"]["port"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    assert probes == {
        "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http"),
        "startupProbe": ("/healthz", "http"),
    }
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    assert document["server"]["workers"] <= int(resources["limits"]["cpu"])

    # the ConfigMap is the file the image's entrypoint reads; the cache dir is a volume
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir, config_file = _dockerfile_config_path().rsplit("/", 1)
    assert (
        volumes[mounts[config_dir]]["configMap"]["name"]
        == manifests["ConfigMap"]["metadata"]["name"]
    )
    assert config_file in manifests["ConfigMap"]["data"]
    config_env = next(e for e in container["env"] if e["name"] == "GITLAB_PYPI_PROXY_CONFIG")
    assert config_env["value"] == _dockerfile_config_path()  # what every command reads
    assert "emptyDir" in volumes[mounts[document["cache"]["directory"]]]

    # every variable the config reads comes from the Secret, none is written in
    env = {e["name"]: e for e in container["env"]}
    assert _variables(text) <= set(env)
    for name in _variables(text) | SECRETS:
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name
        assert "value" not in env[name]

    # SIGTERM lets downloads finish: the pod's grace outlasts the preStop pause and the proxy's
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = document["server"]["graceful_shutdown"]
    assert pod["terminationGracePeriodSeconds"] > pause + graceful
