"""The console's password hash: stdlib scrypt (or PBKDF2) with a random salt, compared in
constant time. Only the hash is configured; the password itself is never stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MiB and tens of ms a check: slow to guess
_MAXMEM = 64 * 1024 * 1024
MIN_LENGTH = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` for ``password`` (what ``admin.password`` holds)."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def hash_problem(stored: str) -> str | None:
    """Why ``stored`` is not a usable hash (None when it is); never echoes it."""
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            if n < 2 or n & (n - 1) or r < 1 or p < 1 or n * r * 128 > _MAXMEM:
                return "scrypt parameters out of range"
            base64.b64decode(parts[4], validate=True)
            base64.b64decode(parts[5], validate=True)
            return None
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            if int(parts[1]) < 100_000:
                return "pbkdf2_sha256 needs at least 100000 iterations"
            base64.b64decode(parts[2], validate=True)
            base64.b64decode(parts[3], validate=True)
            return None
    except ValueError:
        return "a number or base64 field is malformed"
    return "expected scrypt$N$r$p$salt$hash or pbkdf2_sha256$iterations$salt$hash"


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the hash ``stored`` (False for a malformed hash)."""
    if hash_problem(stored) is not None:
        return False
    parts = stored.split("$")
    if parts[0] == "scrypt":
        n, r, p = (int(x) for x in parts[1:4])
        expected = base64.b64decode(parts[5])
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(parts[4]), n=n,
                             r=r, p=p, maxmem=_MAXMEM, dklen=len(expected))
    else:
        expected = base64.b64decode(parts[3])
        got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"),
                                  base64.b64decode(parts[2]), int(parts[1]), len(expected))
    return hmac.compare_digest(got, expected)
