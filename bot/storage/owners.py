"""Claim owners: ``host:pid:tag`` ids that let a restart spot a dead sender's claims."""

from __future__ import annotations

import os
import socket


def make_owner(tag: str = "") -> str:
    """A claim owner id ``host:pid:tag``: the pid lets a restart on this host spot a dead one."""
    return f"{socket.gethostname()}:{os.getpid()}:{tag or os.urandom(4).hex()}"


def owner_alive(owner: str) -> bool:
    """False when ``owner`` ran on this host and its process is gone; True when unknown."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
