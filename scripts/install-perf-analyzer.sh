#!/usr/bin/env bash
# Installs Triton's perf_analyzer 2.60.0 into .oxserve/perf-analyzer/, with
# the command .oxserve/bin/perf_analyzer, for the interop tests and the
# benchmarks. Idempotent. Usage: scripts/install-perf-analyzer.sh (needs .venv
# from scripts/setup.sh; x86_64 Linux only, elsewhere it says so and exits 0).
#
# Everything comes from PyPI and Debian's archive:
# - perf_analyzer itself, from its PyPI wheel perf-analyzer;
# - the wheel needs glibc 2.38, newer than Debian bookworm's, so it runs with
#   trixie's libc6, libstdc++6 and libgcc-s1 unpacked privately (the
#   system's are untouched);
# - its shared-memory mode loads libcudart even for --shared-memory=system,
#   so the nvidia-cuda-runtime-cu12 wheel provides that (no GPU needed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=.oxserve/bin/perf_analyzer
[ -x "$bin" ] && exit 0
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "perf_analyzer: only installed on x86_64 Linux; its interop tests are skipped"
  exit 0
fi
P=$root/.oxserve/perf-analyzer
rm -rf "$P"
mkdir -p "$P/dl" "$P/root" "$P/cudart"
pip() { .venv/bin/pip -q --disable-pip-version-check "$@"; }

pip download --no-deps --only-binary=:all: --platform manylinux_2_38_x86_64 \
    --python-version 3.11 perf-analyzer==2.60.0 -d "$P/dl"
.venv/bin/python -m zipfile -e "$P"/dl/perf_analyzer-2.60.0-*.whl "$P/dl/pa"
install -m 755 "$P/dl/pa/perf_analyzer/bin/perf_analyzer" "$P/perf_analyzer.bin"

pip download --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    nvidia-cuda-runtime-cu12==12.9.79 -d "$P/dl"
.venv/bin/python -m zipfile -e "$P"/dl/nvidia_cuda_runtime_cu12-*.whl "$P/dl/cudart"
cp "$P/dl/cudart/nvidia/cuda_runtime/lib/libcudart.so.12" "$P/cudart/"
# perf_analyzer asks for the unversioned name.
ln -sf libcudart.so.12 "$P/cudart/libcudart.so"

# trixie's C and C++ runtimes, through a private apt configuration.
A=$P/apt
mkdir -p "$A"/{lists/partial,archives/partial,etc}
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$A/etc/sources.list"
cat >"$A/apt.conf" <<CONF
Dir::Etc::SourceList "$A/etc/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::State::Lists "$A/lists";
Dir::Cache::Archives "$A/archives";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
APT_CONFIG=$A/apt.conf apt-get update -qq
(cd "$A/archives" && APT_CONFIG=$A/apt.conf apt-get download -qq libc6 libstdc++6 libgcc-s1)
for deb in "$A"/archives/*.deb; do dpkg-deb -x "$deb" "$P/root"; done
rm -rf "$A" "$P/dl"

mkdir -p .oxserve/bin
cat >"$bin" <<SH
#!/bin/sh
# perf_analyzer 2.60.0, run by trixie's loader with trixie's C/C++ runtimes and
# libcudart first (scripts/install-perf-analyzer.sh). Run it with no arguments
# for its usage (--help is rejected).
R=$P/root/usr/lib/x86_64-linux-gnu
exec "\$R/ld-linux-x86-64.so.2" --library-path "\$R:$P/cudart:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "$P/perf_analyzer.bin" "\$@"
SH
chmod 755 "$bin"
echo "perf_analyzer: $root/$bin"
