#!/usr/bin/env bash
# Fetch, on a networked Debian/Ubuntu x86_64 machine, what a GPU host without network lacks to run
# the control plane and workers; scripts/device_scale_out.sh installs it there. Two git-ignored
# folders of the repository root, to carry along:
#   .whl/site.tar.xz  the service's Python dependencies missing from the host's image (which has torch,
#                     numpy, scipy, httpx, anyio, h11, click, typing-extensions, prometheus-client,
#                     huggingface_hub, safetensors, sentencepiece, pyyaml, tqdm), at the versions the
#                     tests use, installed for CPython $PYVER manylinux x86_64 and packed with xz: as
#                     wheels they would be 48 MB, too much beside the repository for one 64 MiB carry
#   .deb/             redis-server and the libraries it links (Debian packages; unpacked there under /tmp)
#   PYVER=3.11 WHEELS=/tmp/w bash scripts/device_deps.sh   # for a rehearsal on another Python
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
WHEELS=${WHEELS:-.whl}

packages=(
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 websockets==17.4 opentelemetry-api==1.45.2
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4
  annotated-types==0.8.0 annotated-doc==0.0.7 typing-inspection==0.4.5 typing-extensions==4.16.0
  redis==8.1.0
  pyloudnorm==0.2.0 av==18.1.0
  # aiortc (the worker's RTP and WebRTC legs) and what it needs
  aiortc==1.16.0 aioice==0.13.0 pyee==13.0.1 pylibsrtp==1.0.0 cryptography==50.0.2 pyopenssl==26.4.0
  google-crc32c==1.9.0 dnspython==2.9.2 ifaddr==0.2.0 cffi==2.1.1 pycparser==3.12
)
target=(--only-binary=:all: --python-version "$PYVER" --implementation cp)
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
  target+=(--platform "$p")
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps "${target[@]}" -d "$work/wheels" "${packages[@]}"
python3 -m pip install -q --no-deps --no-index --no-compile "${target[@]}" --target "$work/site" "$work"/wheels/*.whl
rm -rf "$work/site/bin"  # console scripts for this machine's Python
{ echo "python $PYVER"; ls "$work/wheels"; } >"$work/site/plexline-site.txt"
mkdir -p "$WHEELS"
tar -C "$work/site" -cf - . | xz -9 >"$WHEELS/site.tar.xz"

# redis-tools holds the binary, redis-server its name; libssl3 and libatomic1 in case the host lacks them.
rm -rf .deb && mkdir .deb
(cd .deb && apt-get download redis-server redis-tools libjemalloc2 liblzf1 libssl3 libatomic1 2>&1 | grep -v '^W:' || true)
for deb in .deb/*.deb; do  # plain names (no '%3a' or '~') for any copying tool
  version=$(dpkg-deb -f "$deb" Version | tr -c 'A-Za-z0-9.\n' '.')
  mv "$deb" ".deb/$(dpkg-deb -f "$deb" Package)_$version.deb"
done

du -ch "$WHEELS/site.tar.xz" .deb/* | tail -1
