"""Password hashes: scrypt from the standard library, in a self-describing string.

Format: `scrypt$<n>$<r>$<p>$<salt, base64>$<key, base64>`, so the cost can be raised later
without breaking hashes already in a config file.
"""

import base64
import hashlib
import hmac
import secrets

_N, _R, _P = 2**15, 8, 1  # about 32 MiB and tens of milliseconds per check
_KEY_BYTES = 32
_MAX_MEMORY = 2**27


class InvalidHash(ValueError):
    """A `password_hash` that is not one this proxy wrote."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=_MAX_MEMORY
    )


def hash_password(password: str, n: int = _N) -> str:
    """A new salted hash; `n` (a power of two) is the cost, memory and time alike."""
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, n, _R, _P, _KEY_BYTES)
    return f"scrypt${n}${_R}${_P}${_b64(salt)}${_b64(key)}"


def dummy_hash(like: str | None = None) -> str:
    """A well-formed hash that no password matches (its key is random), at the cost of `like`
    (or the default): checking a password against it takes as long as a real check."""
    n, r, p, _, key = parse_hash(like) if like else (_N, _R, _P, b"", bytes(_KEY_BYTES))
    salt, key = secrets.token_bytes(16), secrets.token_bytes(len(key))
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


def parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, key) of a hash string; raises InvalidHash."""
    parts = encoded.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
        if n < 2 or n & (n - 1) or r < 1 or p < 1 or not salt or len(key) < 16:
            raise ValueError
    except ValueError:
        raise InvalidHash("not a hash from `gitlab-pypi-proxy hash-password`") from None
    return n, r, p, salt, key


def verify_hash(password: str, encoded: str) -> bool:
    """Slow on purpose (run it in a thread); the comparison is constant-time."""
    n, r, p, salt, key = parse_hash(encoded)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


def verify_plain(password: str, expected: str) -> bool:
    # Digests first: compare_digest on inputs of different lengths would reveal the length.
    given, wanted = (hashlib.sha256(x.encode()).digest() for x in (password, expected))
    return hmac.compare_digest(given, wanted)
