"""A real nginx running `deploy/nginx.conf` for the tests, with the tests' own addresses.

The deployment file is used as it is, except for two lines: the `server api:8000` upstream line
becomes one line per API process, and `listen 8080` becomes a free loopback port. Everything else
nginx needs (pid, logs, temp directories) lives under the test's own directory, and nginx runs in
the foreground (`daemon off`) so that the tests can stop it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.stack import ROOT, free_port

DEPLOY_CONF = ROOT / "deploy" / "nginx.conf"
_UPSTREAM_LINE = re.compile(r"^(\s*)server api:8000(.*);$", re.MULTILINE)
_LISTEN_LINE = re.compile(r"^(\s*)listen 8080;$", re.MULTILINE)

_MAIN_CONF = """\
{user}worker_processes 1;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/docqa.conf;
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


def render_conf(upstreams: list[str], port: int) -> str:
    """deploy/nginx.conf with these upstream addresses and this port (each line must exist once)."""
    text = DEPLOY_CONF.read_text()
    match = _UPSTREAM_LINE.search(text)
    assert match is not None, "deploy/nginx.conf lost its `server api:8000` line"
    assert len(_UPSTREAM_LINE.findall(text)) == 1, "deploy/nginx.conf: one upstream line"
    indent, params = match.group(1), match.group(2)
    servers = "\n".join(f"{indent}server {addr}{params};" for addr in upstreams)
    text = text[: match.start()] + servers + text[match.end() :]
    text, n = _LISTEN_LINE.subn(rf"\g<1>listen 127.0.0.1:{port};", text)
    assert n == 1, "deploy/nginx.conf: listen line"
    return text


@dataclass
class Nginx:
    url: str
    directory: Path
    popen: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.directory / "nginx.log"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGQUIT)  # graceful: finish open requests
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def logs(self) -> str:
        parts = [self.log_path, self.directory / "error.log"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())


def start_nginx(upstreams: list[str], directory: Path) -> Nginx:
    """Run nginx with deploy/nginx.conf in front of `upstreams` (host:port), until stopped."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (scripts/system-deps.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    (directory / "docqa.conf").write_text(render_conf(upstreams, port))
    # As root, nginx's workers would drop to `nobody`, who cannot enter pytest's private tmp.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(_MAIN_CONF.format(dir=directory, user=user))
    conf = directory / "nginx.conf"
    check = subprocess.run(
        [binary, "-t", "-p", str(directory), "-c", str(conf)], capture_output=True, text=True
    )
    assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
    log = (directory / "nginx.log").open("ab")
    popen = subprocess.Popen(
        [binary, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    gateway = Nginx(f"http://127.0.0.1:{port}", directory, popen)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"nginx exited:\n{gateway.logs()}")
        try:
            httpx.get(f"{gateway.url}/healthz", timeout=2)
            return gateway
        except httpx.HTTPError:
            time.sleep(0.1)
    gateway.stop()
    raise TimeoutError(f"nginx did not start:\n{gateway.logs()}")
