# Shared helpers for Ops/ scripts.  Source it:  . "$(dirname "$0")/lib.sh"
# Defines: REPO_ROOT, RUN_DIR (removed at exit), log, die, free_port, wait_for_port,
# run_tmpdir, on_exit.

REPO_ROOT=${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A per-run scratch directory; everything made through run_tmpdir lives under it and
# is removed when the script exits (set COFFER_KEEP_RUN_DIR=1 to keep it for debugging).
# A script started by another Ops script shares its RUN_DIR and leaves it in place.
if [[ -z ${RUN_DIR:-} ]]; then
  RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/coffer-run.XXXXXX")
  _RUN_DIR_OWNED=1
else
  _RUN_DIR_OWNED=0
fi
export RUN_DIR

_EXIT_HOOKS=()
on_exit() { _EXIT_HOOKS+=("$*"); }
_lib_cleanup() {
  local rc=$? i
  for ((i = ${#_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do eval "${_EXIT_HOOKS[i]}" || true; done
  if ((_RUN_DIR_OWNED == 0)); then
    :
  elif [[ ${COFFER_KEEP_RUN_DIR:-0} == 1 ]]; then
    log "kept run dir $RUN_DIR"
  else
    rm -rf -- "$RUN_DIR"
  fi
  return $rc
}
trap _lib_cleanup EXIT

# run_tmpdir NAME -> prints a fresh directory under RUN_DIR
run_tmpdir() { mktemp -d "$RUN_DIR/${1:-tmp}.XXXXXX"; }

# free_port -> prints a currently free TCP port on 127.0.0.1 (chosen by the kernel)
free_port() {
  python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for_port PORT [TIMEOUT_SECONDS=30] [HOST=127.0.0.1] -> 0 once something accepts
wait_for_port() {
  local port=$1 timeout=${2:-30} host=${3:-127.0.0.1}
  python3 - "$host" "$port" "$timeout" <<'PY'
import socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        socket.create_connection((host, port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}
