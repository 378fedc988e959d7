#!/bin/sh
# The reliability and security campaign of issue 19 (bench/campaign/), on loopback; its table goes
# in docs/campaign.md. Exits non-zero when a row fails.
set -e
cd "$(dirname "$0")/.."
exec python -m bench.campaign --json bench/campaign.json "$@"
