"""What `/readyz` and the status page say about the services replicas share (the S3 bucket,
Redis), as this worker saw them last. Either being down leaves the proxy ready but degraded: it
serves all the same, alone (Redis) or straight from upstream without keeping (S3)."""

from gitlab_pypi_proxy.redact import mask_userinfo
from gitlab_pypi_proxy.storage.stores import Stores

_NAMES = {"s3": "S3 bucket", "redis": "Redis"}
_EFFECT = {
    "s3": "files stream from upstream without being kept",
    "redis": "this replica carries on alone",
}


def shared_state(stores: Stores) -> dict[str, dict[str, object]]:
    """{"s3": {"reachable": ..., "reason": ...}, "redis": ...} for the parts configured."""
    state: dict[str, dict[str, object]] = {}
    for part in stores.shared:
        reachable, reason = part.reachable()
        state[part.kind] = {"reachable": reachable, "reason": mask_userinfo(reason) or None}
    return state


def shared_problems(state: dict[str, dict[str, object]]) -> list[str]:
    """One line per shared part that is down."""
    return [
        f"{_NAMES[kind]} unreachable ({part['reason']}): {_EFFECT[kind]}"
        for kind, part in state.items()
        if not part["reachable"]
    ]


def shared_rows(stores: Stores) -> dict[str, str]:
    """Status page rows: one per shared part."""
    return {
        _NAMES[kind]: "reachable" if part["reachable"] else f"unreachable ({part['reason']})"
        for kind, part in shared_state(stores).items()
    }
