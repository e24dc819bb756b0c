"""A real XRootD server on 127.0.0.1: root://, http:// and https:// on one port.

Used by the tests (``tests/xrootd_server.py`` re-exports this module; the ``xrootd_server``
fixture of ``conftest.py`` starts one per test session) and by ``python -m agc_core bench
--what remote``. Needs Debian's ``xrootd-server`` and ``xrootd-server-plugins`` for XrdHttp
(``.ci/run`` installs them). The https certificate is self-signed, for 127.0.0.1; the tests
point ``SSL_CERT_FILE`` at it for the whole session (set before aiohttp builds its default SSL
context).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLE_FILE",
    "CERT_DIR",
    "CERT_FILE",
    "KEY_FILE",
    "PROBE",
    "START_TIMEOUT",
    "DroppingProxy",
    "XRootDServer",
    "free_port",
    "https_context",
    "make_certificate",
    "session_certificate",
    "url_fileset",
]

#: the certificate the session trusts (SSL_CERT_FILE) and its key, made by session_certificate
CERT_DIR = Path(tempfile.gettempdir()) / f"agc-core-xrootd-cert-{os.getpid()}"
CERT_FILE = CERT_DIR / "cert.pem"
KEY_FILE = CERT_DIR / "key.pem"
#: the CA bundle of the session: the one SSL_CERT_FILE named before (if any) plus CERT_FILE
BUNDLE_FILE = CERT_DIR / "bundle.pem"
PROBE = "ready.txt"
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_certificate() -> bool:
    """Make :data:`CERT_FILE` (once per session, before aiohttp loads the trusted certificates).

    Returns:
        False when openssl is missing.
    """
    if BUNDLE_FILE.is_file():
        return True
    for stale in CERT_DIR.parent.glob("agc-core-xrootd-cert-*"):  # of sessions that were killed
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    if shutil.which("openssl") is None:
        return False
    make_certificate(CERT_DIR)
    before = os.environ.get("SSL_CERT_FILE")
    text = Path(before).read_text() if before and Path(before).is_file() else ""
    BUNDLE_FILE.write_text(text + "\n" + CERT_FILE.read_text())
    return True


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 and localhost (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


class XRootDServer:
    """One ``xrootd`` process exporting ``root`` (a folder) on a loopback port.

    Attributes:
        root: the exported folder (``root://127.0.0.1:PORT//name`` is ``root / name``).
        port: the port of all three protocols.
    """

    def __init__(self, base: Path, port: int | None = None) -> None:
        self.base = base
        self.root = base / "export"
        self.admin = base / "admin"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = base / "xrootd.log"
        for d in (self.root, self.admin, base / "run"):
            d.mkdir(parents=True, exist_ok=True)
        (self.root / PROBE).write_text("ready\n")
        session_certificate()
        tls = base / "tls"
        tls.mkdir(exist_ok=True)
        self.cert, self.key = tls / "cert.pem", tls / "key.pem"
        shutil.copy(CERT_FILE, self.cert)
        shutil.copy(KEY_FILE, self.key)
        self.config = base / "xrootd.cfg"
        self._started = False
        self._write_config()
        self._as_root = os.geteuid() == 0

    def _write_config(self) -> None:
        base = self.base
        self.config.write_text("\n".join([
            "all.export /",
            f"oss.localroot {self.root}",
            f"all.adminpath {self.admin}",
            f"all.pidpath {base / 'run'}",
            f"xrd.port {self.port}",
            f"xrd.protocol XrdHttp:{self.port} libXrdHttp.so",
            f"xrd.tls {self.cert} {self.key}",
            "xrd.tlsca noverify",
            "",
        ]))

    def url(self, scheme: str, name: str = "", port: int | None = None) -> str:
        """The URL of ``root / name`` over ``scheme`` (root, http, https), on ``port``."""
        name = str(name).lstrip("/")
        port = port or self.port
        if scheme == "root":
            return f"root://127.0.0.1:{port}//{name}"
        return f"{scheme}://127.0.0.1:{port}/{name}"

    def publish(self) -> None:
        """Make everything in the server's folder readable by the server (after adding files).

        As root the server runs as user xrootd: it must read the export and own its dirs.
        """
        if not self._as_root:
            return
        import pwd

        pw = pwd.getpwnam("xrootd")
        for path in [self.base, *self.base.rglob("*")]:
            with contextlib.suppress(OSError):
                os.chown(path, pw.pw_uid, pw.pw_gid)
                os.chmod(path, 0o600 if path == self.key else
                         (0o755 if path.is_dir() else 0o644))

    def start(self) -> None:
        """Start the server and wait until an http range request answers.

        The first start retries on another free port if xrootd exits at once (the port was
        taken meanwhile); a restart keeps the port (the URLs in use name it).
        """
        for attempt in range(3):
            try:
                self._start()
                self._started = True
                return
            except RuntimeError:
                if self._started or attempt == 2:
                    raise
                self.port = free_port()
                self._write_config()

    def _start(self) -> None:
        self.publish()
        cmd = ["xrootd", "-c", str(self.config), "-l", str(self.log_file), "-n", "agc"]
        if self._as_root:
            cmd[1:1] = ["-R", "xrootd"]
        # cwd: xrootd makes a folder named after the instance there and, as root, hands the
        # folder it runs in to its user
        # its own session: no terminal to stop it (job control), no Ctrl-C meant for pytest
        with open(self.base / "xrootd.err", "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True, cwd=self.base)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                req = urllib.request.Request(self.url("http", PROBE),
                                             headers={"Range": "bytes=0-4"})
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.read() == b"ready":
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"xrootd did not start on 127.0.0.1:{self.port} (see "
                                   f"{self.log_file}: {self.log_tail()})")
            time.sleep(0.05)

    def log_tail(self, n: int = 5) -> str:
        """The last lines of the server's log (for error messages)."""
        logs = sorted(self.base.glob("xrootd.log*")) or sorted(self.base.glob("xrootd.err"))
        if not logs:
            return "no log"
        return " | ".join(logs[-1].read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL), by PID."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the server (a crash)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        stat = Path(f"/proc/{self.proc.pid}/stat")
        deadline = time.monotonic() + 2
        while stat.exists() and time.monotonic() < deadline:  # the signal arrives asynchronously
            if stat.read_text().rsplit(")", 1)[-1].split()[0] in ("T", "t"):
                break
            time.sleep(0.01)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> None:
        """Thaw or restart the server (after a fault test)."""
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
            return
        self.proc = None
        self.start()


def url_fileset(fileset: Path, server: XRootDServer, scheme: str, out: Path,
                port: int | None = None) -> Path:
    """A copy of ``fileset`` (inside the server's export) whose paths are URLs of its files.

    Args:
        fileset: fileset JSON with paths relative to its folder, inside ``server.root``.
        server: the server.
        scheme: root, http or https.
        out: folder for the new JSON.
        port: another port (a proxy, or one nothing listens on) instead of the server's.
    """
    data = json.loads(fileset.read_text())
    rel = fileset.parent.relative_to(server.root)

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (server.url(scheme, f"{rel}/{v}", port) if k == "path" else convert(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    path = out / f"fileset_{scheme}_{port or server.port}.json"
    path.write_text(json.dumps(convert(data)))
    return path


def https_context() -> ssl.SSLContext:
    """An SSL context trusting the session's certificate."""
    return ssl.create_default_context(cafile=str(CERT_FILE))


class DroppingProxy:
    """A loopback TCP proxy to a port that drops one connection in ``every`` (a reset).

    Connections 2, 2 + every, 2 + 2 * every, ... are reset as soon as they are accepted (the
    first drop comes early, so even a short run with few, kept-alive connections meets one).

    Attributes:
        port: where it listens.
        accepted: connections accepted so far.
        dropped: connections reset at once.
    """

    def __init__(self, target_port: int, every: int = 10) -> None:
        self.target = target_port
        self.every = every
        self.accepted = 0
        self.dropped = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)  # lets close() stop the accept loop
        self.port = int(self._sock.getsockname()[1])
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.accepted += 1
            if self.accepted % self.every == 2 % self.every:
                self.dropped += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop listening and close every forwarded connection."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        for s in self._open:
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(5)
