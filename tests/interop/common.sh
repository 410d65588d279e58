# What every interop script starts with (sourced, not run): the one
# argument, the server binary, made absolute; the repository root as the
# working directory; the Python, grpcurl and a free-port helper.
#
# Sets: here, root, bin, PYTHON, GRPCURL (exported).
if [ $# -ne 1 ]; then
  echo "usage: $0 <path-to-oxserve-binary>" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$1
case "$bin" in /*) ;; *) bin=$PWD/$bin ;; esac
if [ ! -x "$bin" ]; then
  echo "not an executable: $bin" >&2
  exit 2
fi
cd "$root"
PYTHON=$root/.venv/bin/python
export GRPCURL=${GRPCURL:-$root/.oxserve/bin/grpcurl}

# A free port: bind to port 0 and let the kernel choose. (It is released
# before the server binds it; a collision in between is very unlikely.)
free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
