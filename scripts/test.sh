#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them.
#   scripts/test.sh               # the whole suite
#   scripts/test.sh -m reference  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages used by the tests (real peers, speech synthesis), installed where missing.
debs=(espeak-ng sox redis-server sip-tester baresip chromium)
missing=()
for pkg in "${debs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python packages in a virtual environment. torch is pinned: 2.13.0 is the CPU build this
# machine's package index carries; any other version downloads a CUDA build of several GB.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[test]"

# pytest exits 5 when no test was collected (for example a -m filter that matches nothing).
status=0
.venv/bin/python -m pytest --durations=20 "$@" || status=$?
[ "$status" -eq 5 ] && status=0
exit "$status"
