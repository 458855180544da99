#!/usr/bin/env python3
"""Ops/bench/namespaces.py — namespace benchmark (issue #4, "Benchmark").

Run through the wrapper `Ops/bench/namespaces`. For Coffer on SQLite and OpenBao on raft,
with the same provisioning client for both (NS_CLIENT: wrk with a Lua state machine, one
connection per wrk thread, or a Python thread pool with one keep-alive http.client connection
per worker thread), it measures:

  1. provisioning: N namespaces, each with a KV v2 mount and one secret (3 requests each)
     -> namespaces/s
  2. resident memory (VmRSS) freshly unsealed and after provisioning + NS_IDLE_WAIT seconds
     (idle eviction) -> memory per idle namespace = (after - before) / N
  3. restart (SIGTERM, start again): exec -> sys/health answering, unseal duration, unseal ->
     first successful KV read in a namespace, exec -> first served request
  4. p50/p99 of a first read of NS_SAMPLE random namespaces after the restart (cold) vs the
     same reads again (warm), sequential, one keep-alive connection

then prints a side-by-side table, the issue's targets with PASS/MISS, and a dated markdown
block for PERFORMANCE.md. Every server it starts is stopped and its temp dir removed at exit.

Environment (all optional):
  NS_COUNT          Coffer namespaces (default 100000)
  BAO_NS_COUNT      OpenBao namespaces (default 1500; OpenBao loads all of them at unseal)
  NS_IDLE_WAIT      seconds to wait after provisioning before reading RSS (default 40)
  NS_IDLE_TIMEOUT   Coffer `namespace_idle_timeout` (default "30s", NS_IDLE_WAIT/2 when the wait
                    is under 40 s; "" to leave it out)
  NS_COFFER_EXTRA   more lines for the Coffer config (`\n` between them), e.g. `usage_flush_interval = "1h"`
  NS_COFFER_LOG_LEVEL  Coffer log level (default info; debug: eviction lines are counted, but
                    request logging slows provisioning by ~25%)
  NS_KEEP_TMP       1: keep the temp dir (server logs, databases) for a post-mortem
  NS_SAMPLE         namespaces read cold then warm after the restart (default 200)
  NS_WORKERS        client threads for provisioning (default 16): wrk -t N -c N, or N Python threads
  NS_CLIENT         provisioning client: wrk (default when `wrk` is on PATH: Debian's wrk 4.1.0, a
                    LuaJIT script, so the client costs little CPU) or python (http.client threads;
                    ~0.5 ms of client CPU per request, which caps the rate on a small machine)
  NS_ONLY           coffer | openbao | coffer,openbao (default both)
  NS_MAX_SECONDS    hard time limit for the whole run (default 1800)
  NS_SEED           random seed for the cold/warm sample (default 4)
  NS_TMPDIR         parent of the temp dir (default /tmp; use a real disk, not tmpfs)
  COFFER_BIN, BAO_BIN  binaries (the wrapper resolves them)
"""

import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import requests

# ---------------------------------------------------------------- settings


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


NS_COUNT = env_int("NS_COUNT", 100000)
BAO_NS_COUNT = env_int("BAO_NS_COUNT", 1500)
IDLE_WAIT = env_int("NS_IDLE_WAIT", 40)
# Coffer's namespace_idle_timeout: by default 30s, or less when NS_IDLE_WAIT is short, so that
# eviction can happen within the wait.
IDLE_TIMEOUT = os.environ.get("NS_IDLE_TIMEOUT", "30s" if IDLE_WAIT >= 40 else f"{max(1, IDLE_WAIT // 2)}s")
SAMPLE = env_int("NS_SAMPLE", 200)
WORKERS = env_int("NS_WORKERS", 16)
MAX_SECONDS = env_int("NS_MAX_SECONDS", 1800)
SEED = env_int("NS_SEED", 4)
ONLY = [s.strip() for s in os.environ.get("NS_ONLY", "coffer,openbao").split(",") if s.strip()]
WRK_BIN = shutil.which("wrk")
# The provisioning client, the same for both sides of a run.
CLIENT = os.environ.get("NS_CLIENT", "").strip().lower() or ("wrk" if WRK_BIN else "python")
COFFER_BIN = os.environ.get("COFFER_BIN", "")
# With debug, Coffer logs "idle namespaces evicted count=… loaded=…", which the report shows;
# it also logs every request, which costs ~25% of the provisioning rate: info by default.
COFFER_LOG_LEVEL = os.environ.get("NS_COFFER_LOG_LEVEL", "info")
BAO_BIN = os.environ.get("BAO_BIN", "")

for side in ONLY:
    if side not in ("coffer", "openbao"):
        sys.exit(f"NS_ONLY: unknown side {side!r} (coffer, openbao)")
if CLIENT not in ("wrk", "python"):
    sys.exit(f"NS_CLIENT: unknown client {CLIENT!r} (wrk, python)")
if CLIENT == "wrk" and not WRK_BIN:
    sys.exit("NS_CLIENT=wrk but wrk is not on PATH (apt-get install wrk, or NS_CLIENT=python)")
if WORKERS < 1:
    sys.exit(f"NS_WORKERS must be >= 1 (got {WORKERS})")


def client_desc():
    if CLIENT == "wrk":
        return f"wrk -t{WORKERS} -c{WORKERS}, one connection per thread, Lua state machine"
    return f"Python http.client, {WORKERS} threads"

T_START = time.monotonic()
DEADLINE = T_START + MAX_SECONDS
SECRET_KEY = "password"


def log(msg):
    print(f"[ns-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Abort(Exception):
    pass


def remaining():
    return DEADLINE - time.monotonic()


def check_deadline(what):
    if remaining() <= 0:
        raise Abort(f"time limit NS_MAX_SECONDS={MAX_SECONDS}s reached during {what}")


# ---------------------------------------------------------------- process bookkeeping

SERVERS = []  # every Server ever started, stopped at exit
TMP_ROOT = None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _pdeathsig():
    # If this script dies without cleaning up, the kernel sends SIGTERM to the server.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Server:
    """One server process (Coffer or OpenBao) on a free loopback port with its own data dir."""

    def __init__(self, name, workdir):
        self.name = name
        self.dir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.logf = None
        self.starts = 0

    def command(self):
        raise NotImplementedError

    def start(self):
        self.starts += 1
        logpath = os.path.join(self.dir, f"server-{self.starts}.log")
        self.logf = open(logpath, "wb")
        self.proc = subprocess.Popen(
            self.command(), stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_pdeathsig, cwd=self.dir)
        if self not in SERVERS:
            SERVERS.append(self)
        log(f"started {self.name} (pid {self.proc.pid}) on {self.base}")
        return self.proc

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.dir, f"server-{self.starts}.log"), "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout=30):
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns seconds to exit."""
        if self.proc is None:
            return 0.0
        t0 = time.monotonic()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.proc.pid}) ignored SIGTERM for {timeout}s: SIGKILL")
                self.proc.kill()
                self.proc.wait()
            except ProcessLookupError:
                pass
        if self.logf:
            self.logf.close()
            self.logf = None
        return time.monotonic() - t0


class CofferServer(Server):
    idle_timeout_used = None

    def __init__(self, workdir, idle_timeout):
        super().__init__("coffer", workdir)
        self.idle_timeout = idle_timeout
        self.write_config()

    def write_config(self):
        extra = f'namespace_idle_timeout = "{self.idle_timeout}"\n' if self.idle_timeout else ""
        extra += os.environ.get("NS_COFFER_EXTRA", "").replace("\\n", "\n")
        with open(os.path.join(self.dir, "config.hcl"), "w") as f:
            f.write(f"""storage "sqlite" {{
  path = "{self.dir}/coffer.db"
}}
allow_plaintext_api = true
listener "tcp" {{
  address     = "127.0.0.1:{self.port}"
  tls_disable = true
}}
api_addr      = "{self.base}"
disable_mlock = true
log_level     = "{COFFER_LOG_LEVEL}"
{extra}""")

    def command(self):
        return [COFFER_BIN, "server", "--config", os.path.join(self.dir, "config.hcl")]


class BaoServer(Server):
    def __init__(self, workdir):
        super().__init__("openbao", workdir)
        self.cluster_port = free_port()
        os.makedirs(os.path.join(self.dir, "raft"), exist_ok=True)
        with open(os.path.join(self.dir, "config.hcl"), "w") as f:
            f.write(f"""storage "raft" {{
  path    = "{self.dir}/raft"
  node_id = "n1"
}}
listener "tcp" {{
  address     = "127.0.0.1:{self.port}"
  tls_disable = true
}}
api_addr      = "{self.base}"
cluster_addr  = "http://127.0.0.1:{self.cluster_port}"
disable_mlock = true
""")

    def command(self):
        return [BAO_BIN, "server", f"-config={os.path.join(self.dir, 'config.hcl')}", "-log-level=warn"]


def cleanup():
    for s in SERVERS:
        try:
            s.stop(timeout=15)
        except Exception as e:  # keep cleaning up
            log(f"stopping {s.name}: {e}")
    if TMP_ROOT and os.path.isdir(TMP_ROOT):
        if os.environ.get("NS_KEEP_TMP") == "1":
            log(f"NS_KEEP_TMP=1: leaving {TMP_ROOT}")
        else:
            shutil.rmtree(TMP_ROOT, ignore_errors=True)


def on_signal(signum, _frame):
    raise Abort(f"signal {signal.Signals(signum).name}")


def on_alarm(_signum, _frame):
    raise Abort(f"time limit NS_MAX_SECONDS={MAX_SECONDS}s reached")


# ---------------------------------------------------------------- HTTP helpers

_tls = threading.local()


def session():
    s = getattr(_tls, "session", None)
    if s is None:
        s = requests.Session()
        a = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0)
        s.mount("http://", a)
        _tls.session = s
    return s


class FastResponse:
    __slots__ = ("status_code", "text")

    def __init__(self, status, text):
        self.status_code, self.text = status, text


def fast_call(method, url, token=None, body=None, ns=None, timeout=60):
    """The provisioning client: one keep-alive http.client connection per thread (about 4x
    cheaper per request than requests.Session, so the client is not what is measured).
    Raises OSError (like requests.ConnectionError) on a broken connection, after reconnecting."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    conn = getattr(_tls, "conn", None)
    if conn is None or getattr(_tls, "conn_netloc", None) != u.netloc:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        _tls.conn, _tls.conn_netloc = conn, u.netloc
    headers = {}
    if token:
        headers["X-Vault-Token"] = token
    if ns:
        headers["X-Vault-Namespace"] = ns
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, u.path + ("?" + u.query if u.query else ""), body=body, headers=headers)
        r = conn.getresponse()
        return FastResponse(r.status, r.read().decode("utf-8", "replace"))
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        _tls.conn = None
        raise OSError(f"{type(e).__name__}: {e}") from e


def call(method, url, token=None, body=None, ns=None, timeout=30, sess=None):
    headers = {}
    if token:
        headers["X-Vault-Token"] = token
    if ns:
        headers["X-Vault-Namespace"] = ns
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers["Content-Type"] = "application/json"
    return (sess or session()).request(method, url, headers=headers, data=data, timeout=timeout)


def must(resp, what):
    if not (200 <= resp.status_code < 300):
        raise Abort(f"{what}: HTTP {resp.status_code}: {resp.text[:400]}")
    return resp


def wait_listening(srv, secs=60, interval=0.005):
    """Poll sys/health until anything answers over HTTP. Returns the monotonic time it did."""
    end = time.monotonic() + secs
    s = requests.Session()
    try:
        while True:
            try:
                s.get(srv.base + "/v1/sys/health", timeout=2)
                return time.monotonic()
            except requests.RequestException:
                pass
            if not srv.alive():
                raise Abort(f"{srv.name} exited during startup:\n{srv.log_tail()}")
            if time.monotonic() > end:
                raise Abort(f"{srv.name} did not answer within {secs}s:\n{srv.log_tail()}")
            time.sleep(interval)
    finally:
        s.close()


def wait_active(srv, secs=60):
    end = time.monotonic() + secs
    while True:
        try:
            r = call("GET", srv.base + "/v1/sys/health", timeout=5)
            if r.status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > end:
            raise Abort(f"{srv.name} not active after {secs}s")
        time.sleep(0.1)


def init_unseal(srv):
    r = must(call("PUT", srv.base + "/v1/sys/init", body={"secret_shares": 1, "secret_threshold": 1}),
             f"{srv.name} init").json()
    key = (r.get("keys") or r.get("keys_base64"))[0]
    root = r["root_token"]
    r = must(call("PUT", srv.base + "/v1/sys/unseal", body={"key": key}), f"{srv.name} unseal").json()
    if r.get("sealed") is not False:
        raise Abort(f"{srv.name} still sealed after unseal: {r}")
    wait_active(srv)
    return key, root


def percentile(values, p):
    """Nearest-rank percentile."""
    if not values:
        return None
    v = sorted(values)
    k = max(1, int(-(-p * len(v) // 100)))  # ceil(p/100 * n)
    return v[min(k, len(v)) - 1]


def ns_name(i):
    return f"t{i:06d}"


def secret_body(i):
    return json.dumps({"data": {SECRET_KEY: f"s3cret-{i:06d}-correct-horse", "tenant": ns_name(i)}})


# ---------------------------------------------------------------- the measurements


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.retries = {}
        self.errors = []
        self.latency = {"create": [], "mount": [], "write": []}  # ms of successful requests

    def took(self, what, ms):
        self.latency[what].append(ms)  # list.append is atomic under the GIL

    def retry(self, what, code):
        with self.lock:
            k = f"{what} {code}"
            self.retries[k] = self.retries.get(k, 0) + 1

    def error(self, msg):
        with self.lock:
            self.errors.append(msg)


def eviction_stats(srv):
    """(namespaces evicted, namespaces still loaded) from Coffer's debug log, or (None, None)."""
    evicted, loaded = None, None
    try:
        with open(os.path.join(srv.dir, f"server-{srv.starts}.log"), "rb") as f:
            for line in f:
                if b"idle namespaces evicted" in line:
                    kv = dict(w.split(b"=", 1) for w in line.split() if b"=" in w)
                    try:
                        evicted = (evicted or 0) + int(kv.get(b"count", b"0"))
                        loaded = int(kv[b"loaded"]) if b"loaded" in kv else loaded
                    except ValueError:
                        pass
    except OSError:
        pass
    return evicted, loaded


def provision_one(base, root, i, stats, stop_evt):
    """Create namespace i, mount KV v2 at secret/ in it, write one secret. Retries transient
    failures (OpenBao upgrades a new KV v2 mount asynchronously: its first write may fail)."""
    name = ns_name(i)
    steps = [
        ("create", "POST", f"{base}/v1/sys/namespaces/{name}", None, b"{}"),
        ("mount", "POST", f"{base}/v1/sys/mounts/secret", name,
         b'{"type":"kv","options":{"version":"2"}}'),
        ("write", "POST", f"{base}/v1/secret/data/x", name, secret_body(i)),
    ]
    for what, method, url, ns, body in steps:
        attempt = 0
        while True:
            if stop_evt.is_set():
                return False
            attempt += 1
            try:
                t0 = time.perf_counter()
                r = fast_call(method, url, token=root, body=body, ns=ns, timeout=60)
                code = r.status_code
                if 200 <= code < 300:
                    stats.took(what, (time.perf_counter() - t0) * 1000)
                    break
                text = r.text[:200]
            except OSError as e:
                code, text = "conn", str(e)[:200]
            # A create that timed out may have succeeded: "already exists" then means done.
            if what == "create" and attempt > 1 and code == 400 and "exist" in text:
                break
            stats.retry(what, code)
            # Client errors are final, except on the first write to a new KV v2 mount
            # (OpenBao answers while it upgrades the mount) and 429.
            final = isinstance(code, int) and 400 <= code < 500 and code != 429 and what != "write"
            if final or attempt >= 40:
                stats.error(f"{name} {what}: HTTP {code}: {text}")
                return False
            time.sleep(min(0.05 * attempt, 0.5))
    return True


def provision(srv, root, n, budget):
    """Provision namespaces 0..n-1 with WORKERS threads. Stops submitting at `budget` s."""
    stats = Stats()
    stop_evt = threading.Event()
    done = 0
    failed = 0
    t_end_budget = time.monotonic() + budget
    cpu0_srv = cpu_seconds(srv.pid)
    cpu0_cli = sum(os.times()[:2])
    t0 = time.monotonic()
    last_log, last_done = t0, 0
    tenth = max(1, n // 10)
    t_tenth = t_ninetenths = None
    next_i = 0
    truncated = False
    indices = []  # the namespaces whose three steps succeeded
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="prov")
    try:
        inflight = {}  # future -> namespace index
        # Keep a bounded number of futures in flight (memory stays flat at 100k).
        while next_i < n or inflight:
            while next_i < n and len(inflight) < WORKERS * 4 and not truncated:
                inflight[pool.submit(provision_one, srv.base, root, next_i, stats, stop_evt)] = next_i
                next_i += 1
            if not inflight:
                break
            fut = next(as_completed(inflight))
            i = inflight.pop(fut)
            if fut.result():
                done += 1
                indices.append(i)
            else:
                failed += 1
            now = time.monotonic()
            if done == tenth:
                t_tenth = now
            if done == n - tenth:
                t_ninetenths = now
            if now - last_log >= 10:
                rate = (done - last_done) / (now - last_log)
                log(f"{srv.name}: {done}/{n} namespaces, {rate:.0f}/s over the last {now - last_log:.0f}s, "
                    f"RSS {rss_kb(srv.pid)} kB")
                last_log, last_done = now, done
            if not srv.alive():
                stop_evt.set()
                raise Abort(f"{srv.name} died during provisioning:\n{srv.log_tail()}")
            if failed > max(20, n // 100):
                stop_evt.set()
                raise Abort(f"{srv.name}: {failed} namespaces failed; first errors: {stats.errors[:5]}")
            if not truncated and (now > t_end_budget or remaining() < 0):
                truncated = True
                next_i = n  # submit nothing more
                log(f"{srv.name}: provisioning budget {budget:.0f}s used up at {done} namespaces; "
                    "stopping here (raise NS_MAX_SECONDS for the full count)")
    except BaseException:
        # On an abort (signal, time limit, dead server) workers give up at once.
        stop_evt.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    elapsed = time.monotonic() - t0
    cpu1_srv = cpu_seconds(srv.pid)
    cpu1_cli = sum(os.times()[:2])
    return {
        "count": done,
        "failed": failed,
        "requested": n,
        "truncated": truncated,
        "seconds": elapsed,
        "rate": done / elapsed if elapsed > 0 else 0.0,
        # Does the rate hold up as namespaces accumulate? First vs last tenth of the run.
        "rate_first10": tenth / (t_tenth - t0) if t_tenth else None,
        "rate_last10": tenth / (t0 + elapsed - t_ninetenths) if t_ninetenths and done == n else None,
        "server_cpu_pct": (100 * (cpu1_srv - cpu0_srv) / elapsed) if cpu0_srv is not None and cpu1_srv is not None else None,
        "client_cpu_pct": 100 * (cpu1_cli - cpu0_cli) / elapsed,
        "step_ms": {k: (percentile(v, 50), percentile(v, 99)) for k, v in stats.latency.items()},
        "retries": stats.retries,
        "errors": stats.errors[:10],
        "indices": sorted(indices),
        "client": "python",
    }


# The wrk provisioning client. wrk -tW -cW gives every wrk thread exactly one connection, so a
# thread's requests are strictly sequential and each thread can run one namespace at a time as
# a small state machine. LuaJIT builds each request and reads each response; wrk's C event
# loop does the I/O, so the client costs a fraction of the Python client's CPU per request.
WRK_LUA = r'''-- Written by Ops/bench/namespaces.py (NS_CLIENT=wrk); run as
--   NS_WRK_TOKEN=<root token> wrk -tW -cW -d<secs>s -s provision.lua <url> -- <base> <W> <max_failed>
-- One connection per thread: thread t (1..W) provisions namespaces base + (t-1) + k*W for
-- k = 0, 1, 2, ...: step 0 creates the namespace, step 1 mounts KV v2 at secret/ in it, step 2
-- writes one secret. A 2xx moves to the next step (after step 2: completed + 1, next k). Any
-- other answer retries the same step after delay() = min(50 ms * attempt, 500 ms); a create
-- answered 400 "...exist..." on a retry counts as done (an earlier attempt did it). After 40
-- attempts, or at once for a 4xx other than 429 on create/mount (as provision_one does), the
-- namespace is given up: recorded in failed_ks, not counted, and the thread moves to the next k.
-- A thread that gave up max_failed namespaces stops (the bench aborts after the run anyway).
-- done() prints RESULT/RETRY/ERR/SOCK/REQ/LAT/PCT lines that the bench parses.

local threads = {}
local next_tid = 1

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  threads[#threads + 1] = thread
end

-- Per-thread results: globals, so that done() can read them with thread:get().
completed = 0   -- namespaces with all three steps answered 2xx
k = 0           -- namespace in progress = base + (tid-1) + k*W; every k' < k is completed or failed
failed_ks = ""  -- the k's given up, comma-separated
retries = {}    -- "<step> <status>" -> failed attempts, e.g. "write 400"
errs = {}       -- the first give-up reasons
started = 0     -- 1 once a request for the namespace in progress was sent (left half done at the end)

local STEPS = {"create", "mount", "write"}
local MAX_ATTEMPTS = 40
local MOUNT = '{"type":"kv","options":{"version":"2"}}'
local base, W, max_failed, hdr
local nfailed = 0
local step, attempt, pending, backoff = 0, 0, false, 0
local idx, name
-- wrk calls request() once on thread 1 right after init() to check the request (not sent).
-- Every request it sends comes after delay() (or after a reconnect), so delay() marks us live.
local live = false

local function begin()
  idx = base + (tid - 1) + k * W
  name = string.format("t%06d", idx)
  step, attempt, backoff, started = 0, 0, 0, 0
end

function init(args)
  base = tonumber(args[1])
  W = tonumber(args[2])
  max_failed = tonumber(args[3])
  hdr = "Host: " .. wrk.headers["Host"] .. "\r\nX-Vault-Token: " .. (os.getenv("NS_WRK_TOKEN") or "")
        .. "\r\nContent-Type: application/json\r\n"
  begin()
end

local function note_retry(code)
  local key = STEPS[step + 1] .. " " .. code
  retries[key] = (retries[key] or 0) + 1
end

local function give_up(code, text)
  if #errs < 5 then
    local t = string.gsub(string.sub(text or "", 1, 200), "%s+", " ")
    errs[#errs + 1] = string.format("%s %s: HTTP %s: %s", name, STEPS[step + 1], tostring(code), t)
  end
  if failed_ks == "" then failed_ks = tostring(k) else failed_ks = failed_ks .. "," .. tostring(k) end
  k = k + 1
  begin()
  nfailed = nfailed + 1
  if nfailed >= max_failed then
    wrk.thread:stop()  -- ends this thread's event loop; wrk itself still runs to -d
  end
end

local function advance()
  if step < 2 then
    step, attempt = step + 1, 0
  else
    completed = completed + 1
    k = k + 1
    begin()
  end
end

function delay()
  live = true
  return backoff
end

local function build()
  if step == 0 then
    return "POST /v1/sys/namespaces/" .. name .. " HTTP/1.1\r\n" .. hdr .. "Content-Length: 2\r\n\r\n{}"
  elseif step == 1 then
    return "POST /v1/sys/mounts/secret HTTP/1.1\r\n" .. hdr .. "X-Vault-Namespace: " .. name
           .. "\r\nContent-Length: " .. #MOUNT .. "\r\n\r\n" .. MOUNT
  end
  local body = string.format('{"data": {"password": "s3cret-%06d-correct-horse", "tenant": "%s"}}', idx, name)
  return "POST /v1/secret/data/x HTTP/1.1\r\n" .. hdr .. "X-Vault-Namespace: " .. name
         .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end

function request()
  if not live then
    return build()  -- wrk's check of the request format, before the run
  end
  if pending then
    -- The last request got no response: wrk hit a socket error and reconnected.
    note_retry("conn")
    if attempt >= MAX_ATTEMPTS then give_up("conn", "no response (socket error, see wrk's counts)") end
  end
  pending, backoff, started = true, 0, 1
  attempt = attempt + 1
  return build()
end

function response(status, headers, body)
  pending = false
  if status >= 200 and status < 300 then
    advance()
    return
  end
  if step == 0 and attempt > 1 and status == 400 and string.find(body or "", "exist", 1, true) then
    advance()
    return
  end
  note_retry(status)
  local final = status >= 400 and status < 500 and status ~= 429 and step ~= 2
  if final or attempt >= MAX_ATTEMPTS then
    give_up(status, body)
    return
  end
  backoff = math.min(50 * attempt, 500)
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local fk = t:get("failed_ks")
    if fk == "" then fk = "-" end
    io.write(string.format("RESULT %d %d %d %s %d\n", t:get("tid"), t:get("completed"), t:get("k"), fk,
                           t:get("started")))
    for key, c in pairs(t:get("retries")) do total[key] = (total[key] or 0) + c end
    for _, e in ipairs(t:get("errs")) do io.write("ERR ", e, "\n") end
  end
  for key, c in pairs(total) do io.write(string.format("RETRY %s %d\n", key, c)) end
  local e = summary.errors
  io.write(string.format("SOCK %d %d %d %d %d\n", e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("REQ %d %d\n", summary.requests, summary.duration))
  -- Latency (us) over all requests of the run, all three steps together.
  io.write(string.format("LAT %d %d\n", latency:percentile(50), latency:percentile(99)))
  for p = 1, 99 do io.write(string.format("PCT %d %d\n", p, latency:percentile(p))) end
  io.write(string.format("PCT 99.5 %d\nPCT 99.9 %d\n", latency:percentile(99.5), latency:percentile(99.9)))
end
'''

WRK_SOCK_KEYS = ("connect", "read", "write", "status", "timeout")


def run_wrk(srv, script, root, base, secs, tag, max_failed):
    """One wrk run of `secs` seconds provisioning from namespace index `base`. Returns the
    parsed results, the wall time and the CPU seconds (user + system) of the wrk process."""
    out_path = os.path.join(srv.dir, f"wrk-{tag}.out")
    err_path = os.path.join(srv.dir, f"wrk-{tag}.err")
    # The token goes through the environment, not the command line (ps).
    env = dict(os.environ, NS_WRK_TOKEN=root)
    # --timeout only decides which latencies wrk records (and counts as timeouts); wrk never
    # abandons a slow request, so a long one does not turn into a retry.
    cmd = [WRK_BIN, f"-t{WORKERS}", f"-c{WORKERS}", f"-d{secs}s", "--timeout", "10s", "-s", script,
           srv.base, "--", str(base), str(WORKERS), str(max(1, max_failed))]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=_pdeathsig, cwd=srv.dir)
        reaped = False
        try:
            while True:
                # wait4 rather than Popen.wait: it also gives the child's rusage (client CPU).
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    reaped = True
                    break
                if not srv.alive():
                    raise Abort(f"{srv.name} died during provisioning:\n{srv.log_tail()}")
                if time.monotonic() - t0 > secs + 60:
                    raise Abort(f"wrk did not exit {secs + 60}s after a {secs}s run")
                time.sleep(0.05)
        finally:
            if not reaped:  # an abort (signal, time limit, dead server): stop wrk too
                proc.kill()
                try:
                    os.waitpid(proc.pid, 0)
                except ChildProcessError:
                    pass
                proc.returncode = -signal.SIGKILL
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)

    with open(out_path, errors="replace") as f:
        text = f.read()
    threads, retries, errs, pct = {}, {}, [], {}
    sock, reqs, lat = dict.fromkeys(WRK_SOCK_KEYS, 0), 0, None
    left_behind = 0  # namespaces in progress when the run ended (on the server, half done)
    for line in text.splitlines():
        w = line.split(" ")
        try:
            if w[0] == "RESULT" and len(w) == 6:
                threads[int(w[1])] = (int(w[2]), int(w[3]),
                                      set() if w[4] == "-" else {int(x) for x in w[4].split(",")})
                left_behind += int(w[5])
            elif w[0] == "RETRY" and len(w) == 4:
                retries[f"{w[1]} {w[2]}"] = int(w[3])
            elif w[0] == "ERR":
                errs.append(line[4:])
            elif w[0] == "SOCK" and len(w) == 6:
                sock = dict(zip(WRK_SOCK_KEYS, map(int, w[1:])))
            elif w[0] == "REQ" and len(w) == 3:
                reqs = int(w[1])
            elif w[0] == "LAT" and len(w) == 3:
                lat = (int(w[1]), int(w[2]))
            elif w[0] == "PCT" and len(w) == 3:
                pct[float(w[1])] = int(w[2])
        except ValueError:
            pass
    if proc.returncode != 0 or sorted(threads) != list(range(1, WORKERS + 1)):
        with open(err_path, errors="replace") as f:
            tail = (text + f.read()).strip().splitlines()[-20:]
        raise Abort(f"wrk run {tag} failed (exit {proc.returncode}, results from {len(threads)} of "
                    f"{WORKERS} threads):\n" + "\n".join(tail))

    # Thread t handled indices base + (t-1) + k*W. Every k below its final k was completed or
    # given up; the final k was in progress when the run ended and is left behind half done.
    indices = []
    for t, (completed, k_end, failed_ks) in threads.items():
        if completed != k_end - len(failed_ks):
            raise Abort(f"wrk run {tag}: thread {t} reports {completed} completed, k={k_end}, "
                        f"{len(failed_ks)} failed: inconsistent")
        indices.extend(base + (t - 1) + kk * WORKERS for kk in range(k_end) if kk not in failed_ks)
    return {
        "indices": indices,
        "count": len(indices),
        "failed": sum(len(f) for _, _, f in threads.values()),
        "left_behind": left_behind,
        "next_base": base + WORKERS * (max(k for _, k, _ in threads.values()) + 1),
        "retries": retries,
        "errors": errs,
        "sock": sock,
        "requests": reqs,
        "lat_us": lat,
        "pct_us": pct,
        "wall": wall,
        "cpu": ru.ru_utime + ru.ru_stime,
        "secs": secs,
    }


def merged_percentile(runs, p):
    """Percentile p (in %) of the request latencies of several wrk runs, from each run's
    percentile table (1..99, 99.5, 99.9) weighted by its request count: the smallest tabulated
    value x where the weighted share of requests <= x reaches p. Exact for one run."""
    runs = [(r["requests"], r["pct_us"]) for r in runs if r["requests"] and r["pct_us"]]
    total = sum(w for w, _ in runs)
    if not total:
        return None
    for x in sorted({v for _, q in runs for v in q.values()}):
        share = sum(w * max((pp for pp, v in q.items() if v <= x), default=0) for w, q in runs) / total
        if share >= p - 1e-9:
            return x
    return max(v for _, q in runs for v in q.values())


def provision_wrk(srv, root, n, budget):
    """Provision about n namespaces with wrk (see WRK_LUA), in runs of fixed duration until n
    are done or `budget` s are used up. Returns the same figures as provision()."""
    script = os.path.join(srv.dir, "provision.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA)
    t_end_budget = time.monotonic() + budget
    cpu0_srv = cpu_seconds(srv.pid)
    t0 = time.monotonic()
    runs, indices, retries, errors = [], [], {}, []
    sock = dict.fromkeys(WRK_SOCK_KEYS, 0)
    failed = 0
    empty_runs = 0
    base = 0
    # wrk runs for a fixed -d (a thread cannot end the run early), so provisioning is a series of
    # runs, each sized from the rate so far; the total overshoots n (by up to ~1 s of work after
    # the first run; for a small n the first run alone, sized at 200/s, can do 2-3x n). Every run starts
    # from a fresh base index above everything the previous run touched, so names never collide:
    # the namespace each thread had in progress when a run ended is left behind, not counted.
    secs = max(1, min(10, math.ceil(n / 200)))  # first run: 200/s is a conservative guess
    while len(indices) < n:
        left = min(t_end_budget - time.monotonic(), remaining() - 5)
        secs = min(secs, int(left))
        if secs < 1:
            log(f"{srv.name}: provisioning budget {budget:.0f}s used up at {len(indices)} namespaces; "
                "stopping here (raise NS_MAX_SECONDS for the full count)")
            break
        # A thread stops once it alone has given up more namespaces than may still fail.
        r = run_wrk(srv, script, root, base, secs, f"{len(runs) + 1}", max(20, n // 100) - failed + 1)
        runs.append(r)
        indices.extend(r["indices"])
        failed += r["failed"]
        for key, c in r["retries"].items():
            retries[key] = retries.get(key, 0) + c
        errors.extend(r["errors"])
        for key in WRK_SOCK_KEYS:
            sock[key] += r["sock"].get(key, 0)
        base = r["next_base"]
        seconds = sum(x["wall"] for x in runs)
        log(f"{srv.name}: wrk run {len(runs)} ({secs}s): {r['count']} namespaces in {r['wall']:.1f}s = "
            f"{r['count'] / r['wall']:.0f}/s, {r['failed']} failed, {sum(r['retries'].values())} retried "
            f"requests; {len(indices)}/{n} done, RSS {rss_kb(srv.pid)} kB")
        if not srv.alive():
            raise Abort(f"{srv.name} died during provisioning:\n{srv.log_tail()}")
        if failed > max(20, n // 100):
            raise Abort(f"{srv.name}: {failed} namespaces failed; first errors: {errors[:5]}")
        empty_runs = empty_runs + 1 if r["count"] == 0 else 0
        if empty_runs >= 3:
            raise Abort(f"{srv.name}: no namespace completed in 3 wrk runs; errors: {errors[:5]}, "
                        f"socket errors {sock}")
        check_deadline("provisioning")
        done = len(indices)
        rate = done / seconds if seconds > 0 else 0
        secs = min(60, max(2, math.ceil((n - done) / rate) + 1 if rate > 0 else 2 * secs))
    elapsed = time.monotonic() - t0
    cpu1_srv = cpu_seconds(srv.pid)
    seconds = sum(x["wall"] for x in runs)  # wall time of the wrk processes
    done = len(indices)
    p50, p99 = merged_percentile(runs, 50), merged_percentile(runs, 99)
    return {
        "count": done,
        "failed": failed,
        "requested": n,
        "truncated": done < n,
        "seconds": seconds,
        "rate": done / seconds if seconds > 0 else 0.0,
        # With wrk: the rate of the first and of the last wrk run (None with a single run).
        "rate_first10": runs[0]["count"] / runs[0]["wall"] if len(runs) > 1 else None,
        "rate_last10": runs[-1]["count"] / runs[-1]["wall"] if len(runs) > 1 else None,
        "server_cpu_pct": (100 * (cpu1_srv - cpu0_srv) / elapsed)
        if cpu0_srv is not None and cpu1_srv is not None and elapsed > 0 else None,
        "client_cpu_pct": 100 * sum(x["cpu"] for x in runs) / seconds if seconds > 0 else None,
        # wrk's latencies cover the three request kinds together.
        "step_ms": {"all": (p50 / 1000, p99 / 1000)} if p50 is not None else {},
        "retries": retries,
        "errors": errors[:10],
        "indices": sorted(indices),
        "client": "wrk",
        "runs": [(x["secs"], x["count"], round(x["wall"], 2)) for x in runs],
        "socket_errors": {k: v for k, v in sock.items() if v and k != "status"},
        "requests": sum(x["requests"] for x in runs),
        # Namespaces a wrk run ended in the middle of: they exist on the server (some even with
        # their secret) but are not counted, nor used for the reads.
        "left_behind": sum(x["left_behind"] for x in runs),
    }


def restart_and_time(srv, key, probe_ns):
    """Stop the server, start it again and time: exec -> HTTP answering, the unseal call, and
    unseal -> first successful KV read in namespace `probe_ns`."""
    stop_s = srv.stop(timeout=60)
    log(f"{srv.name} stopped in {stop_s:.2f}s; restarting")
    t_exec = time.monotonic()
    srv.start()
    t_listen = wait_listening(srv)
    rss_listen = rss_kb(srv.pid)
    s = requests.Session()
    t_u0 = time.monotonic()
    r = s.put(srv.base + "/v1/sys/unseal", json={"key": key}, timeout=120)
    t_u1 = time.monotonic()
    if r.status_code != 200 or r.json().get("sealed") is not False:
        raise Abort(f"{srv.name} unseal after restart: HTTP {r.status_code}: {r.text[:300]}")
    return t_exec, t_listen, t_u0, t_u1, rss_listen, stop_s, s


def first_served(srv, sess, root, probe_ns, probe_i, secs=120):
    end = time.monotonic() + secs
    attempts = 0
    last = ""
    while True:
        attempts += 1
        try:
            r = call("GET", srv.base + "/v1/secret/data/x", token=root, ns=probe_ns, timeout=30, sess=sess)
            if r.status_code == 200:
                got = r.json()["data"]["data"][SECRET_KEY]
                if got != f"s3cret-{probe_i:06d}-correct-horse":
                    raise Abort(f"{srv.name}: wrong secret in {probe_ns}: {got!r}")
                return time.monotonic(), attempts
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except requests.RequestException as e:
            last = str(e)[:200]
        if time.monotonic() > end:
            raise Abort(f"{srv.name}: no successful read in {probe_ns} within {secs}s ({last})")
        time.sleep(0.005)


def timed_reads(srv, sess, root, idxs, label):
    lat = []
    errors = 0
    for i in idxs:
        t0 = time.perf_counter()
        r = call("GET", srv.base + "/v1/secret/data/x", token=root, ns=ns_name(i), timeout=30, sess=sess)
        dt = (time.perf_counter() - t0) * 1000
        if r.status_code != 200 or r.json()["data"]["data"][SECRET_KEY] != f"s3cret-{i:06d}-correct-horse":
            errors += 1
            if errors <= 3:
                log(f"{srv.name} {label} read {ns_name(i)}: HTTP {r.status_code}: {r.text[:200]}")
            continue
        lat.append(dt)
    return {
        "n": len(lat), "errors": errors,
        "p50": percentile(lat, 50), "p99": percentile(lat, 99),
        "max": max(lat) if lat else None,
        "mean": sum(lat) / len(lat) if lat else None,
    }


def run_side(srv, n, budget, key_name):
    res = {"name": key_name, "requested": n}
    srv.start()
    wait_listening(srv)
    key, root = init_unseal(srv)
    # A root-namespace request so both servers have done their post-unseal work.
    call("GET", srv.base + "/v1/sys/mounts", token=root)
    time.sleep(1)
    res["rss_before_kb"] = rss_kb(srv.pid)
    log(f"{srv.name}: unsealed, RSS {res['rss_before_kb']} kB; provisioning {n} namespaces "
        f"with {client_desc()}")

    check_deadline("provisioning")
    # Preflight: does this build have the namespace API at all?
    r = call("LIST", srv.base + "/v1/sys/namespaces", token=root)
    if r.status_code not in (200, 404) or "unsupported path" in r.text:
        raise Abort(f"{srv.name} has no namespace API (LIST sys/namespaces: HTTP {r.status_code}: "
                    f"{r.text[:200]}); stale binary? set COFFER_BIN")
    prov = (provision_wrk if CLIENT == "wrk" else provision)(srv, root, n, budget)
    res["prov"] = prov
    n_ok = prov["count"]
    log(f"{srv.name}: provisioned {n_ok} namespaces in {prov['seconds']:.1f}s = "
        f"{prov['rate']:.1f}/s (server CPU {prov['server_cpu_pct'] or 0:.0f}%, client CPU "
        f"{prov['client_cpu_pct'] or 0:.0f}%, retries {prov['retries'] or 0})")
    if n_ok == 0:
        raise Abort(f"{srv.name}: no namespace provisioned; errors: {prov['errors']}")
    res["rss_after_prov_kb"] = rss_kb(srv.pid)

    wait = max(0, min(IDLE_WAIT, remaining() - 30))
    log(f"{srv.name}: RSS right after provisioning {res['rss_after_prov_kb']} kB; "
        f"waiting {wait:.0f}s with all namespaces idle")
    t_w = time.monotonic()
    peak = res["rss_after_prov_kb"] or 0
    while time.monotonic() - t_w < wait:
        time.sleep(1)
        peak = max(peak, rss_kb(srv.pid) or 0)
    res["idle_wait_s"] = wait
    res["rss_idle_kb"] = rss_kb(srv.pid)
    res["evicted"], res["loaded_at_idle"] = eviction_stats(srv)
    res["per_ns_kb"] = (res["rss_idle_kb"] - res["rss_before_kb"]) / n_ok
    log(f"{srv.name}: RSS idle {res['rss_idle_kb']} kB -> {res['per_ns_kb']:.2f} kB per idle namespace")
    if not srv.alive():
        raise Abort(f"{srv.name} died while idle:\n{srv.log_tail()}")

    # 3. restart: exec -> listening -> unseal -> first served request in a namespace
    check_deadline("restart")
    rng = random.Random(SEED)
    # Only namespaces whose three steps all succeeded (with wrk the indices have gaps: failed
    # namespaces, and the ones left half done at the end of each wrk run).
    pool = list(prov["indices"])
    rng.shuffle(pool)
    probe_i = pool[0]
    sample = pool[1:1 + SAMPLE]
    t_exec, t_listen, t_u0, t_u1, rss_listen, stop_s, sess = restart_and_time(srv, key, ns_name(probe_i))
    t_first, attempts = first_served(srv, sess, root, ns_name(probe_i), probe_i)
    res["stop_s"] = stop_s
    res["start_to_listen_s"] = t_listen - t_exec
    res["unseal_s"] = t_u1 - t_u0
    res["unseal_to_served_s"] = t_first - t_u0
    res["start_to_served_s"] = t_first - t_exec
    res["first_served_attempts"] = attempts
    res["rss_listen_kb"] = rss_listen
    res["rss_after_restart_kb"] = rss_kb(srv.pid)
    log(f"{srv.name}: restart: listening after {res['start_to_listen_s']:.3f}s, unseal "
        f"{res['unseal_s']:.3f}s, first KV read served {res['unseal_to_served_s']:.3f}s after the "
        f"unseal call ({attempts} attempts), {res['start_to_served_s']:.3f}s after exec; "
        f"RSS {res['rss_after_restart_kb']} kB")

    # 4. cold vs warm, sequential, same keep-alive connection
    check_deadline("cold/warm reads")
    res["cold"] = timed_reads(srv, sess, root, sample, "cold")
    res["rss_after_cold_kb"] = rss_kb(srv.pid)
    res["warm"] = timed_reads(srv, sess, root, sample, "warm")
    sess.close()
    log(f"{srv.name}: cold p50 {res['cold']['p50']:.2f} ms p99 {res['cold']['p99']:.2f} ms; warm "
        f"p50 {res['warm']['p50']:.2f} ms p99 {res['warm']['p99']:.2f} ms ({len(sample)} namespaces)")
    if not srv.alive():
        raise Abort(f"{srv.name} died during the reads:\n{srv.log_tail()}")
    res["log_tail"] = srv.log_tail(15)
    srv.stop()
    return res


# ---------------------------------------------------------------- report


def fmt(v, spec=".2f", unit=""):
    if v is None:
        return "n/a"
    return f"{v:{spec}}{unit}"


def mb(kb):
    return None if kb is None else kb / 1024


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def report(results, notes):
    c = results.get("coffer")
    b = results.get("openbao")

    def g(r, *path):
        cur = r
        for p in path:
            if cur is None:
                return None
            cur = cur.get(p)
        return cur

    def pair(v):
        return "n/a" if v is None else "{} / {}".format(*(fmt(x) for x in v))

    first_last = ("  first / last wrk run (namespaces/s)" if CLIENT == "wrk"
                  else "  first / last 10% (namespaces/s)")
    rows = [
        ("provisioning client", lambda r: g(r, "prov", "client") or "n/a"),
        ("namespaces provisioned", lambda r: fmt(g(r, "prov", "count"), "d") +
         (" (time limit)" if g(r, "prov", "truncated") else "")),
        ("provisioning (namespaces/s)", lambda r: fmt(g(r, "prov", "rate"), ".1f")),
        (first_last, lambda r: f"{fmt(g(r, 'prov', 'rate_first10'), '.1f')} / "
                                                      f"{fmt(g(r, 'prov', 'rate_last10'), '.1f')}"),
        ("provisioning wall time (s)", lambda r: fmt(g(r, "prov", "seconds"), ".1f")),
        ("  server / client CPU (%)", lambda r: f"{fmt(g(r, 'prov', 'server_cpu_pct'), '.0f')} / "
                                               f"{fmt(g(r, 'prov', 'client_cpu_pct'), '.0f')}"),
        ("  create p50 / p99 (ms)", lambda r: pair(g(r, "prov", "step_ms", "create"))),
        ("  mount p50 / p99 (ms)", lambda r: pair(g(r, "prov", "step_ms", "mount"))),
        ("  secret write p50 / p99 (ms)", lambda r: pair(g(r, "prov", "step_ms", "write"))),
        ("  request p50 / p99, all steps (ms)", lambda r: pair(g(r, "prov", "step_ms", "all"))),
        ("  retried requests", lambda r: fmt(sum((g(r, "prov", "retries") or {}).values()), "d")),
        ("RSS freshly unsealed (MB)", lambda r: fmt(mb(g(r, "rss_before_kb")), ".1f")),
        ("RSS right after provisioning (MB)", lambda r: fmt(mb(g(r, "rss_after_prov_kb")), ".1f")),
        ("RSS all idle, after wait (MB)", lambda r: fmt(mb(g(r, "rss_idle_kb")), ".1f")),
        ("evicted / still loaded at idle", lambda r: f"{fmt(g(r, 'evicted'), 'd')} / {fmt(g(r, 'loaded_at_idle'), 'd')}"),
        ("memory per idle namespace (KB)", lambda r: fmt(g(r, "per_ns_kb"), ".2f")),
        ("RSS after restart + unseal (MB)", lambda r: fmt(mb(g(r, "rss_after_restart_kb")), ".1f")),
        ("start -> listening (s)", lambda r: fmt(g(r, "start_to_listen_s"), ".3f")),
        ("unseal call (s)", lambda r: fmt(g(r, "unseal_s"), ".3f")),
        ("unseal -> first served read (s)", lambda r: fmt(g(r, "unseal_to_served_s"), ".3f")),
        ("start -> first served read (s)", lambda r: fmt(g(r, "start_to_served_s"), ".3f")),
        ("cold read p50 / p99 (ms)", lambda r: f"{fmt(g(r, 'cold', 'p50'))} / {fmt(g(r, 'cold', 'p99'))}"),
        ("warm read p50 / p99 (ms)", lambda r: f"{fmt(g(r, 'warm', 'p50'))} / {fmt(g(r, 'warm', 'p99'))}"),
        ("cold / warm read errors", lambda r: f"{fmt(g(r, 'cold', 'errors'), 'd')} / {fmt(g(r, 'warm', 'errors'), 'd')}"),
    ]

    per_ns = g(c, "per_ns_kb")
    ratio = None
    if g(c, "prov", "rate") and g(b, "prov", "rate"):
        ratio = c["prov"]["rate"] / b["prov"]["rate"]
    u2s = g(c, "unseal_to_served_s")
    targets = [
        ("Coffer memory per idle namespace (KB)", fmt(per_ns, ".2f"), "<= 10",
         verdict(None if per_ns is None else per_ns <= 10)),
        ("Coffer / OpenBao provisioning rate", fmt(ratio, ".1f"), ">= 20",
         verdict(None if ratio is None else ratio >= 20)),
        ("Coffer unseal -> serving (s)", fmt(u2s, ".3f"), "< 2",
         verdict(None if u2s is None else u2s < 2)),
    ]

    sides = [("Coffer", c), ("OpenBao", b)]
    w = max(len(r[0]) for r in rows) + 2
    print()
    print(f"== Namespace benchmark ({os.cpu_count()} cores, provisioning client: {client_desc()}, "
          f"{SAMPLE} cold/warm namespaces) ==")
    print()
    print(f"{'':{w}}{'Coffer (SQLite)':>22}{'OpenBao (raft)':>22}")
    for label, fn in rows:
        print(f"{label:{w}}" + "".join(f"{(fn(r) if r else 'not run'):>22}" for _, r in sides))
    print()
    print(f"{'target':40}{'value':>10}{'goal':>8}  verdict")
    for t in targets:
        print(f"{t[0]:40}{t[1]:>10}{t[2]:>8}  {t[3]}")
    for n in notes:
        print(f"NOTE: {n}")

    today = datetime.date.today().isoformat()
    print()
    print("----- markdown for PERFORMANCE.md -----")
    print(f"### Namespace benchmark {today}")
    print()
    print(f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, `Ops/bench/namespaces`: "
          f"provisioning client `{client_desc()}`"
          + (" (each thread provisions one namespace at a time over its keep-alive connection; "
             "runs of fixed duration, rate = namespaces / wrk wall time)" if CLIENT == "wrk"
             else " (one keep-alive connection each)")
          + ", loopback; each namespace "
          "= namespace create + KV v2 mount + one secret (3 requests). RSS from /proc VmRSS; memory "
          f"per idle namespace = (RSS after provisioning and {IDLE_WAIT}s idle − RSS freshly unsealed) / N. "
          "Restart = SIGTERM, exec, unseal, first KV read in a namespace. Cold/warm = "
          f"{SAMPLE} random namespaces read once after the restart, then again, sequentially.")
    if c:
        print(f"Coffer: SQLite storage, {COFFER_BIN_NOTE}"
              + (f", namespace_idle_timeout = {c.get('idle_timeout')}" if c.get("idle_timeout") else
                 ", no namespace_idle_timeout") + ".")
    if b:
        print(f"OpenBao: {BAO_VERSION}, integrated raft storage.")
    for n in notes:
        print(f"Caveat: {n}")
    print()
    print("| figure | Coffer | OpenBao |")
    print("|---|---:|---:|")
    for label, fn in rows:
        print(f"| {label.strip()} | " + " | ".join((fn(r) if r else "not run") for _, r in sides) + " |")
    print()
    print("| target | value | goal | verdict |")
    print("|---|---:|---:|---|")
    for t in targets:
        print(f"| {t[0]} | {t[1]} | {t[2]} | {t[3]} |")
    print("----- end -----")


# ---------------------------------------------------------------- main


def binary_mentions(path, needle):
    """Whether a binary contains `needle` (a config key it parses, say)."""
    try:
        with open(path, "rb") as f:
            tail = b""
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    return False
                if needle in tail + chunk:
                    return True
                tail = chunk[-len(needle):]
    except OSError:
        return True  # cannot tell: do not claim otherwise

COFFER_BIN_NOTE = ""
BAO_VERSION = ""


def main():
    global TMP_ROOT, COFFER_BIN_NOTE, BAO_VERSION
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(MAX_SECONDS)

    results = {}
    notes = []
    rc = 0
    TMP_ROOT = tempfile.mkdtemp(prefix="coffer-ns-bench.", dir=os.environ.get("NS_TMPDIR") or "/tmp")
    try:
        if "coffer" in ONLY:
            if not COFFER_BIN or not os.access(COFFER_BIN, os.X_OK):
                raise Abort(f"coffer binary not found: {COFFER_BIN!r}")
            COFFER_BIN_NOTE = os.path.relpath(COFFER_BIN, os.path.join(os.path.dirname(__file__), "../.."))
            if IDLE_TIMEOUT and not binary_mentions(COFFER_BIN, b"namespace_idle_timeout"):
                notes.append(f"{COFFER_BIN_NOTE} does not contain the string namespace_idle_timeout: "
                             "the setting is probably ignored (no idle eviction in this build)")
            d = os.path.join(TMP_ROOT, "coffer")
            os.makedirs(d)
            srv = CofferServer(d, IDLE_TIMEOUT)
            if IDLE_TIMEOUT:
                # Does this build accept namespace_idle_timeout? Start once and see.
                srv.start()
                try:
                    wait_listening(srv, secs=30)
                    used = IDLE_TIMEOUT
                except Abort as e:
                    log(f"coffer refused namespace_idle_timeout ({str(e).splitlines()[0]}); "
                        "running without it")
                    notes.append("this Coffer build refused `namespace_idle_timeout`: run without it")
                    srv.idle_timeout = ""
                    srv.write_config()
                    used = ""
                srv.stop()
                for f in os.listdir(d):
                    if f.startswith("coffer.db"):
                        os.remove(os.path.join(d, f))
                srv.starts = 0
            else:
                used = ""
            # Leave time for the idle wait, the restart and the reads, and for the OpenBao side.
            bao_reserve = (BAO_NS_COUNT / 10 + IDLE_WAIT + 90) if "openbao" in ONLY else 0
            budget = max(10, remaining() - IDLE_WAIT - 60 - bao_reserve)
            results["coffer"] = run_side(srv, NS_COUNT, budget, "coffer")
            results["coffer"]["idle_timeout"] = used
        if "openbao" in ONLY:
            if not BAO_BIN or not os.access(BAO_BIN, os.X_OK):
                raise Abort(f"bao binary not found: {BAO_BIN!r}")
            v = subprocess.run([BAO_BIN, "version"], capture_output=True, text=True, timeout=30).stdout
            BAO_VERSION = " ".join(v.split()[:2])
            d = os.path.join(TMP_ROOT, "openbao")
            os.makedirs(d)
            check_deadline("openbao start")
            budget = max(10, remaining() - IDLE_WAIT - 60)
            results["openbao"] = run_side(BaoServer(d), BAO_NS_COUNT, budget, "openbao")
    except Abort as e:
        log(f"ERROR: {e}")
        notes.append(f"run aborted: {str(e).splitlines()[0]}")
        rc = 1
    finally:
        signal.alarm(0)
        try:
            cleanup()
        except Abort:
            cleanup()
    for name, r in results.items():
        p = r.get("prov", {})
        if p.get("retries"):
            why = (" (first write to a new KV v2 mount while OpenBao upgrades it: expected)"
                   if name == "openbao" and set(p["retries"]) <= {"write 400"} else "")
            notes.append(f"{name}: retried requests during provisioning: {p['retries']}{why}")
        if p.get("errors"):
            notes.append(f"{name}: failed namespaces: {p['failed']} (first: {p['errors'][0]})")
        if p.get("left_behind"):
            notes.append(f"{name}: {p['left_behind']} more namespaces were left half provisioned at the "
                         f"end of the {len(p.get('runs', []))} wrk run(s): on the server but not counted "
                         "(memory per idle namespace divides by the counted ones)")
        if p.get("socket_errors"):
            notes.append(f"{name}: wrk socket errors/timeouts during provisioning: {p['socket_errors']} "
                         "(requests without a response were re-sent, counted as 'conn' retries)")
        if p.get("truncated"):
            notes.append(f"{name}: provisioning stopped by the time limit at {p['count']} of {p['requested']}")
        if name == "coffer" and r.get("evicted") is None and r.get("idle_timeout"):
            notes.append("coffer: evictions not counted (NS_COFFER_LOG_LEVEL=debug logs them, at ~25% "
                         "provisioning cost)")
        if r.get("idle_wait_s", IDLE_WAIT) < IDLE_WAIT:
            notes.append(f"{name}: idle wait shortened to {r['idle_wait_s']:.0f}s by the time limit")
    cpu = os.getloadavg()[0]
    if cpu > os.cpu_count() * 1.5:
        notes.append(f"load average {cpu:.1f} at the end on {os.cpu_count()} cores: other work was running")
    if results:
        report(results, notes)
    return rc


if __name__ == "__main__":
    sys.exit(main())
