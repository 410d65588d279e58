#!/usr/bin/env bash
# Builds the oxserve images with plain `docker build`, as a user would:
#   oxserve:VERSION                  Dockerfile, target cpu (the default)
#   oxserve-example-models:VERSION   Dockerfile, target example-models
#   oxserve:VERSION-gpu              Dockerfile.gpu (only with --gpu)
# VERSION is the workspace version (Cargo.toml).
#
# It works with the classic builder (DOCKER_BUILDKIT=0), the only one in
# Debian's docker.io, and builds on the host network (`--network host`).
# Where no Docker engine runs, it starts one: Debian's dockerd, installed
# with apt-get if missing (needs root), without a bridge or iptables rules,
# so containers must use the host network.
#
# Base images that cannot be pulled (a machine without access to a container
# registry) are replaced by stand-ins under the same names, built from
# Debian's packages with mmdebstrap, and the script says so. The stand-ins
# carry this machine's CA bundle, so builds inside them reach crates.io and
# PyPI through the same TLS set-up as the host. The rust stand-in carries
# this machine's Rust toolchain, which must be the version the Dockerfile
# names. There is no stand-in for the CUDA base of the GPU image.
#
# Options:
#   --gpu            also build Dockerfile.gpu
#   --rebuild-check  prove that a source change costs one crate's compile,
#                    not the dependency tree: fail unless the CPU build's
#                    last compile built only the workspace's own crates (the
#                    dependencies came from the cargo-chef layer), and unless
#                    `--target deps` of a copy of the build context with a
#                    server source changed comes entirely from the cache
#   --rebuild-time   rebuild the CPU image from such a copy and say how long
#                    it took (a release compile of the server: minutes)
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), for the
# stand-ins.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

gpu=false
rebuild_check=false
rebuild_time=false
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=true ;;
    --rebuild-check) rebuild_check=true ;;
    --rebuild-time) rebuild_time=true ;;
    *) echo "usage: $0 [--gpu] [--rebuild-check] [--rebuild-time]" >&2; exit 2 ;;
  esac
done

export DOCKER_BUILDKIT=0
say() { echo "build-images: $*"; }
fail() { echo "build-images: $*" >&2; exit 1; }
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || fail "cannot read the workspace version from Cargo.toml"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca_bundle=/etc/ssl/certs/ca-certificates.crt

apt_updated=false
apt_install() {
  [ "$(id -u)" = 0 ] || fail "need root to install $* (apt-get)"
  if ! $apt_updated; then
    apt-get update -qq
    apt_updated=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- the engine -------------------------------------------------------------
ensure_engine() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    say "no Docker engine: installing Debian's docker.io"
    apt_install docker.io
  fi
  local log=${TMPDIR:-/tmp}/oxserve-dockerd.log
  say "no Docker engine running: starting dockerd (log: $log)"
  # No bridge and no iptables rules: everything here runs on the host
  # network, and the host's firewall is left alone.
  nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 &
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$log" >&2; fail "dockerd did not come up within 60 s"; }
    sleep 0.5
  done
}

# --- base images ------------------------------------------------------------
# The external base images of a Dockerfile: FROM lines with the global ARG
# defaults substituted, minus the file's own stage names.
bases_of() {
  local file=$1 line name value stage
  declare -A args=()
  local -a stages=() found=()
  while IFS= read -r line; do
    if [[ $line =~ ^ARG[[:space:]]+([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] && [ ${#stages[@]} -eq 0 ]; then
      args[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
    elif [[ $line =~ ^FROM[[:space:]]+([^[:space:]]+)([[:space:]]+[Aa][Ss][[:space:]]+([^[:space:]]+))? ]]; then
      value=${BASH_REMATCH[1]}
      stage=${BASH_REMATCH[3]}
      for name in "${!args[@]}"; do
        value=${value//\$\{$name\}/${args[$name]}}
      done
      if ! printf '%s\n' "${stages[@]}" | grep -qxF -- "$value"; then
        found+=("$value")
      fi
      stages+=("$stage")
    fi
  done <"$file"
  printf '%s\n' "${found[@]}" | sort -u
}

ensure_mmdebstrap() {
  command -v mmdebstrap >/dev/null || apt_install mmdebstrap
}

# mmdebstrap with what Debian's slim images leave out (documentation, man
# pages, locales), writing a tarball to stdout. force-unsafe-io: no fsync
# for a root file system that only lives until it is imported (twice as
# fast here).
debian_rootfs() {
  local suite=$1
  shift
  mmdebstrap --quiet --variant=minbase --format=tar --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --aptopt='Acquire::Languages "none"' \
    "$@" "$suite" - \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb ${mirror%/debian}/debian-security $suite-security main"
}

# The hook that puts this machine's CA bundle into a stand-in.
ca_hook="--customize-hook=mkdir -p \"\$1/etc/ssl/certs\" && cp $ca_bundle \"\$1$ca_bundle\""

standin_debian() { # debian:SUITE-slim
  local image=$1 suite=${1#debian:}
  suite=${suite%-slim}
  debian_rootfs "$suite" | docker import --change 'CMD ["bash"]' - "$image" >/dev/null
}

standin_python() { # python:X.Y-slim-SUITE: Debian's python3 and pip
  local image=$1 suite=${1##*-}
  debian_rootfs "$suite" --include=ca-certificates,python3,python3-pip,python-is-python3 "$ca_hook" \
    | docker import --change 'CMD ["python3"]' - "$image" >/dev/null
}

standin_rust() { # rust:X.Y-SUITE: Debian's C toolchain and this machine's Rust
  local image=$1 suite=${1##*-} wanted=${1#rust:}
  wanted=${wanted%-*}
  command -v rustc >/dev/null || fail "no rustc on PATH for the $image stand-in"
  local have sysroot
  have=$(rustc --version | awk '{print $2}')
  [[ $have == "$wanted" || $have == "$wanted".* ]] \
    || fail "$image stand-in: this machine's Rust is $have, the Dockerfile wants $wanted"
  sysroot=$(rustc --print sysroot)
  [ -x "$sysroot/bin/cargo" ] || fail "no cargo in $sysroot/bin for the $image stand-in"
  # Only what compiling needs: the compiler, cargo and the standard library
  # (no documentation, no rustup proxies). Laid out as the official image:
  # CARGO_HOME=/usr/local/cargo (cargo install puts binaries there).
  local hook="--customize-hook=mkdir -p \"\$1/usr/local/rust\" \"\$1/usr/local/cargo/bin\" && tar -C $sysroot -c bin/cargo bin/rustc bin/rustdoc lib libexec | tar -C \"\$1/usr/local/rust\" -x"
  debian_rootfs "$suite" --include=ca-certificates,gcc,libc6-dev,make,pkg-config,git "$ca_hook" "$hook" \
    | docker import \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "ENV RUST_VERSION=$have" \
        --change 'CMD ["bash"]' \
        - "$image" >/dev/null
}

standin_busybox() { # busybox:X: Debian's static busybox and its applet links
  local image=$1 work
  work=$(mktemp -d)
  (
    cd "$work"
    if ! apt-get download busybox-static >/dev/null 2>&1; then
      apt-get update -qq # no package lists yet
      apt-get download busybox-static >/dev/null
    fi
    dpkg-deb -x busybox-static_*.deb pkg
    mkdir -p rootfs/bin rootfs/tmp rootfs/etc
    cp pkg/bin/busybox rootfs/bin/busybox
    for applet in $(rootfs/bin/busybox --list); do
      [ -e "rootfs/bin/$applet" ] || ln -s busybox "rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >rootfs/etc/passwd
    printf 'root:x:0:\n' >rootfs/etc/group
    tar -C rootfs -c . | docker import --change 'CMD ["sh"]' - "$image" >/dev/null
  )
  rm -rf "$work"
}

# The stand-in builder for an image name, if there is one.
standin_for() {
  case "$1" in
    debian:*-slim) echo standin_debian ;;
    python:*-slim-*) echo standin_python ;;
    rust:*-*) echo standin_rust ;;
    busybox:*) echo standin_busybox ;;
    *) return 1 ;;
  esac
}

# Makes every base image present: already there, pulled, or else a stand-in.
# Stand-ins build side by side (mostly downloads and unpacking).
ensure_bases() {
  local image error started builder
  local -a wanted=() pids=()
  for image in "$@"; do
    if docker image inspect "$image" >/dev/null 2>&1; then
      say "base $image: present"
    elif error=$(docker pull -q "$image" 2>&1); then
      say "base $image: pulled"
    else
      standin_for "$image" >/dev/null || fail "cannot pull $image (${error##*: }) and there is no stand-in for it"
      say "base $image: cannot be pulled (${error##*: })"
      say "base $image: building a STAND-IN under that name from Debian packages (mmdebstrap)"
      wanted+=("$image")
    fi
  done
  [ ${#wanted[@]} -gt 0 ] || return 0
  ensure_mmdebstrap
  started=$SECONDS
  for image in "${wanted[@]}"; do
    builder=$(standin_for "$image")
    "$builder" "$image" >"$logs/standin-${image//[:\/]/_}.log" 2>&1 &
    pids+=($!)
  done
  local i
  for i in "${!wanted[@]}"; do
    if ! wait "${pids[$i]}"; then
      tail -n 20 "$logs/standin-${wanted[$i]//[:\/]/_}.log" >&2
      fail "building the stand-in for ${wanted[$i]} failed"
    fi
    say "base ${wanted[$i]}: stand-in built, $(mb "${wanted[$i]}") MB"
  done
  say "stand-ins built in $((SECONDS - started)) s"
}

# --- building ---------------------------------------------------------------
mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f", $1 / 1e6}'; }

build() { # build LOG ARGS...: docker build on the host network, timed
  local log=$1 started
  shift
  started=$SECONDS
  if ! docker build --network host "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    fail "docker build $* failed (full log: $log)"
  fi
  say "docker build $*: $((SECONDS - started)) s"
}

logs=${TMPDIR:-/tmp}/oxserve-build-images
mkdir -p "$logs"
ensure_engine
dockerfiles=(Dockerfile)
$gpu && dockerfiles+=(Dockerfile.gpu)
mapfile -t bases < <(for f in "${dockerfiles[@]}"; do bases_of "$f"; done | sort -u)
ensure_bases "${bases[@]}"

cpu_image=oxserve:$version
models_image=oxserve-example-models:$version
build "$logs/example-models.log" --target example-models -t "$models_image" .
build "$logs/cpu.log" --target cpu -t "$cpu_image" .
if $gpu; then
  build "$logs/gpu.log" -f Dockerfile.gpu -t "$cpu_image-gpu" .
fi

cpu_base=$(bases_of Dockerfile | grep -E '^debian:' | head -n 1)
image_mb=$(mb "$cpu_image")
base_mb=$(mb "$cpu_base")
say "$cpu_image: $image_mb MB; its base $cpu_base: $base_mb MB; added: $(awk "BEGIN {printf \"%.1f\", $image_mb - $base_mb}") MB"
say "$models_image: $(mb "$models_image") MB"
$gpu && say "$cpu_image-gpu: $(mb "$cpu_image-gpu") MB"

# The build log without the colours newer docker clients give its stderr.
plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
# The crates the `RUN cargo build` step of a build log compiled.
compiled_by() {
  # awk reads to the end (no `exit`): stopping early would kill `plain`
  # with SIGPIPE once the log outgrows the pipe, failing under pipefail.
  plain "$1" | awk '!done && /^Step [0-9]+\/[0-9]+ : RUN cargo build/ {b = 1; next}
                    b && /^Step / {b = 0; done = 1}
                    b && /^ *Compiling / {print $2}' | sort | tr '\n' ' '
}
# A copy of the build context with one server source changed (Docker's
# cache keys on file contents: touching the file would not do).
changed_context() {
  local context
  context=$(mktemp -d)
  tar -C "$root" --exclude=./target --exclude=./.venv --exclude=./.git --exclude=./.oxserve -cf - . \
    | tar -C "$context" -xf -
  printf '\n// rebuild check %s\n' "$(date +%s%N)" >>"$context/server/main.rs"
  echo "$context"
}

if $rebuild_check; then
  members=" $(cargo metadata --no-deps --format-version 1 --offline \
    | python3 -c 'import json, sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))') "
  compiled=$(compiled_by "$logs/cpu.log")
  if [ -z "$compiled" ]; then
    say "rebuild check: the server's compile step came from the cache (nothing changed since the last build)"
  fi
  for crate in $compiled; do
    [[ $members == *" $crate "* ]] \
      || fail "rebuild check: the compile step built a dependency ($crate): the dependency layer did not hold it; see $logs/cpu.log"
  done
  context=$(changed_context)
  (cd "$context" && build "$logs/deps.log" --target deps -t oxserve:deps-check .)
  rm -rf "$context"
  docker rmi oxserve:deps-check >/dev/null
  # The planner reruns (it reads the changed source and writes the same
  # recipe); every step of the deps stage itself must say "Using cache".
  ran=$(plain "$logs/deps.log" | awk '/^Step [0-9]+\/[0-9]+ : FROM .* [Aa][Ss] deps$/ {in_deps = 1; next}
                                      in_deps && /^Step / {step = $0; ok[step] = 0}
                                      in_deps && / ---> Using cache/ {ok[step] = 1}
                                      END {for (s in ok) if (!ok[s]) print s}')
  grep -q ' : FROM .* [Aa][Ss] deps$' < <(plain "$logs/deps.log") \
    || fail "rebuild check: no deps stage in the build log ($logs/deps.log)"
  [ -z "$ran" ] || fail "rebuild check: after a source change these dependency steps ran again: $ran (see $logs/deps.log)"
  say "rebuild check: after a change to server/main.rs the dependency layer comes from the cache; the compile step builds only: ${compiled:-(cached)}"
fi

if $rebuild_time; then
  context=$(changed_context)
  started=$SECONDS
  (cd "$context" && build "$logs/rebuild.log" --target cpu -t oxserve:rebuild-time .)
  took=$((SECONDS - started))
  rm -rf "$context"
  docker rmi oxserve:rebuild-time >/dev/null
  say "rebuild after a change to server/main.rs: $took s; compiled: $(compiled_by "$logs/rebuild.log")"
fi
