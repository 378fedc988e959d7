"""A network namespace where loopback is the only interface, for real peers that do not stay on loopback.

aiortc offers every interface address as an ICE candidate and baresip takes its address from an
interface, so tests and benchmarks that run them do so inside a namespace made with `unshare -rn`
(root inside, for a normal user too), where `lo` is up with 127.0.0.1 and 127.0.0.2 (aioice skips
127.0.0.1 when it gathers candidates) and nothing else can be reached (docs: shared TESTING.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess

INSIDE = "PLEXLINE_LOOPBACK_NAMESPACE"  # "1" in a process started inside the namespace
SETUP = "ip link set lo up && ip addr add 127.0.0.2/8 dev lo"


def inside() -> bool:
    return os.environ.get(INSIDE) == "1"


def namespace_command(*command: str) -> list[str]:
    """`command` inside a new loopback-only network namespace (give it `INSIDE`=1 in its environment)."""
    return ["unshare", "-rn", "sh", "-c", f'{SETUP} && exec "$@"', "sh", *command]


def namespace_problem() -> str | None:
    """Why the namespace cannot be made here, or None."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (packages util-linux and iproute2)"
    probe = subprocess.run(namespace_command("true"), capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return (f"`unshare -rn` failed ({probe.stderr.strip() or probe.returncode}): the interop tests need user "
                "and network namespaces (a kernel that allows them, e.g. sysctl kernel.unprivileged_userns_clone=1 "
                "and no seccomp profile that forbids unshare)")
    return None
