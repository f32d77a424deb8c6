"""The real backing services the cluster tests stand on: Redis and SeaweedFS start on loopback,
answer real requests, come back after a stop with their data, and leave nothing behind."""

import socket
from pathlib import Path

import obstore
import psutil
import pytest
import redis

from tests.backing_services import S3Server, running_redis, running_seaweedfs
from tests.waiting import wait_until


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid)


def test_redis_set_get_publish_subscribe_and_nothing_left(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as server:
        pid, port = server.process.pid, server.port
        client = server.client()
        assert client.set("k", b"v")
        assert client.get("k") == b"v"

        subscriber = server.client().pubsub()
        subscriber.subscribe("invalidate")
        wait_until(
            lambda: (m := subscriber.get_message(timeout=0.5)) and m["type"] == "subscribe",
            "the subscription to be confirmed",
        )
        assert client.publish("invalidate", b"acme-utils") == 1  # one subscriber got it
        message = wait_until(lambda: subscriber.get_message(timeout=0.5), "the message")
        assert (message["channel"], message["data"]) == (b"invalidate", b"acme-utils")
        subscriber.close()

        server.stop()  # as in an outage: the client fails, then the server comes back
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        server.start()
        assert server.port == port
        assert client.get("k") is None  # nothing persisted
        assert client.set("k", b"again")
        pid = server.process.pid
        client.close()
    assert _gone(pid)
    assert _refused(port)
    assert not list((tmp_path / "redis").glob("*.rdb"))


def test_a_failing_test_leaves_no_server(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the test failed"), running_redis(tmp_path) as server:
        pid, port = server.process.pid, server.port
        raise RuntimeError("the test failed")
    assert _gone(pid)
    assert _refused(port)


def _s3_round_trips(s3: S3Server) -> None:
    store = s3.store()
    key = "files/" + "a" * 64
    body = bytes(range(256)) * 40
    assert obstore.put(store, key, body, mode="create")["e_tag"]
    with pytest.raises(obstore.exceptions.AlreadyExistsError):  # If-None-Match: * refused it
        obstore.put(store, key, b"something else", mode="create")
    assert bytes(obstore.get(store, key).bytes()) == body  # the first put stands

    assert bytes(obstore.get_range(store, key, start=1000, end=1010)) == body[1000:1010]
    ranged = obstore.get(store, key, options={"range": {"offset": 10_000}})
    assert bytes(ranged.bytes()) == body[10_000:]
    assert obstore.head(store, key)["size"] == len(body)

    obstore.delete(store, key)
    with pytest.raises(FileNotFoundError):  # obstore's NotFoundError is a FileNotFoundError
        obstore.head(store, key)


def test_seaweedfs_put_if_absent_range_delete_restart_and_nothing_left(tmp_path: Path) -> None:
    with running_seaweedfs(tmp_path / "seaweedfs") as s3:
        ports = dict(s3.ports)
        assert len(set(ports.values())) == 8  # master, volume, filer, S3 and their gRPC ports
        _s3_round_trips(s3)

        wrong = S3Server(s3.directory, ports=s3.ports, secret_access_key="not-the-secret")
        with pytest.raises(obstore.exceptions.BaseError):
            obstore.put(wrong.store(), "files/denied", b"x")

        obstore.put(s3.store(), "files/kept", b"kept across a restart")
        s3.stop()
        with pytest.raises(obstore.exceptions.BaseError):
            obstore.get(s3.store(), "files/kept")
        s3.start()
        assert s3.ports == ports
        assert bytes(obstore.get(s3.store(), "files/kept").bytes()) == b"kept across a restart"
        pid = s3.process.pid
    assert _gone(pid)
    assert all(_refused(port) for port in ports.values())
    assert s3.sockets_left() == []
