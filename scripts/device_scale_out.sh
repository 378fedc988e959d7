#!/usr/bin/env bash
# The scale-out check (scripts/scale_out.py) on a GPU host without network, from the repository root:
#   bash scripts/device_scale_out.sh                            # scale_out.py --gpus 2 --baseline
#   bash scripts/device_scale_out.sh --gpus 1 --cpu-workers 1   # any arguments replace those
# Needs .whl/ and .deb/ carried along (scripts/device_deps.sh fetches them on a networked machine):
# the Python packages go to $SITE (not the host's Python), redis-server is unpacked under
# $REDIS_ROOT (never /) and runs with its own libraries. Results: $OUT/scale-out.json, logs in $OUT/logs.
# PYTHON, WHEELS, SITE, REDIS_ROOT and OUT may be set to run it elsewhere (a rehearsal on a CPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
REDIS_ROOT=${REDIS_ROOT:-/tmp/redis-root}
OUT=${OUT:-$PWD/.out}
mkdir -p "$OUT"

fail() { echo "device_scale_out: $*" >&2; exit 3; }

# 1. Python packages the host lacks: site.tar.xz (installed for one Python version), and any wheels.
if [ -f "$WHEELS/site.tar.xz" ]; then
  "$PYTHON" -c '
import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    built_for = tar.extractfile("./plexline-site.txt").readline().split()[1].decode()
    here = "%d.%d" % sys.version_info[:2]
    if built_for != here:
        sys.exit(f"site.tar.xz holds packages for Python {built_for}, this is {here}: "
                 f"make it with PYVER={here} bash scripts/device_deps.sh")
    tar.extractall(sys.argv[2], filter="data")
' "$WHEELS/site.tar.xz" "$SITE" || fail "unpacking $WHEELS/site.tar.xz failed"
fi
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl || fail "installing the wheels of $WHEELS failed"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# 2. What the control plane and the worker import must import; the rest of the code is listed for the record.
"$PYTHON" -c '
import importlib, pkgutil, sys
needed = ["plexline.cli", "agent.worker", "agent.worker_api", "agent.worker_settings", "agent.engine.engine",
          "agent.model.loading", "agent.prompts", "telephony.control.app", "telephony.control.control_plane", "telephony.control.settings",
          "telephony.control.worker_client", "telephony.control.redis_registry", "personas.store", "uvicorn", "httpx", "yaml"]
missing = {}
for package in ("plexline", "agent", "telephony", "personas", "voices"):
    names = [m.name for m in pkgutil.walk_packages([package], package + ".") if not m.name.endswith("__main__")]
    for name in [package, *names]:
        try:
            importlib.import_module(name)
        except ImportError as error:
            missing.setdefault(error.name or str(error), []).append(name)
failed = []
for name in needed:
    try:
        importlib.import_module(name)
    except ImportError as error:
        failed.append(f"{name}: {error}")
for module, users in sorted(missing.items()):
    shown = ", ".join(users[:4]) + (", ..." if len(users) > 4 else "")
    print(f"device_scale_out: not importable here: {module} (needed by {shown})")
import torch
print("device_scale_out: Python", sys.version.split()[0], "torch", torch.__version__, "GPUs", torch.cuda.device_count(),
      "| the service imports:", "ok" if not failed else "MISSING " + "; ".join(failed))
sys.exit(1 if failed else 0)
' || fail "the control plane or the worker cannot be imported here (see above)"

# 3. redis-server: the carried Debian packages unpacked under $REDIS_ROOT, else one on PATH.
if compgen -G ".deb/*.deb" >/dev/null; then
  command -v dpkg >/dev/null || fail "dpkg is needed to unpack .deb/*.deb"
  rm -rf "$REDIS_ROOT" && mkdir -p "$REDIS_ROOT"
  for deb in .deb/*.deb; do dpkg -x "$deb" "$REDIS_ROOT" || fail "cannot unpack $deb"; done
  libs="$REDIS_ROOT/usr/lib/x86_64-linux-gnu:$REDIS_ROOT/lib/x86_64-linux-gnu"
  binary="$REDIS_ROOT/usr/bin/redis-server"
  missing=$(LD_LIBRARY_PATH="$libs" ldd "$binary" 2>&1 | grep -E "not found|not a dynamic")
  [ -z "$missing" ] || fail "redis-server ($binary) lacks libraries here:"$'\n'"$missing"
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$libs" "$binary" >"$REDIS_ROOT/redis-server"
  chmod +x "$REDIS_ROOT/redis-server"
  export PLEXLINE_REDIS_SERVER="$REDIS_ROOT/redis-server"
fi
"${PLEXLINE_REDIS_SERVER:-redis-server}" --version || fail "redis-server does not run here"

# 4. The check.
command -v nvidia-smi >/dev/null && nvidia-smi -L
[ $# -gt 0 ] || set -- --gpus 2 --baseline
"$PYTHON" scripts/scale_out.py --json "$OUT/scale-out.json" --logs "$OUT/logs" "$@"
