"""A minimal Kubernetes API client for the lab's clusters (standard library only): JSON over HTTPS with
a client certificate or a bearer token. The sandbox daemons run it inside network namespaces, where
the project's venv may be all there is.

    api = Api(("https://198.18.200.11:6443", ...), ca=Path("ca.crt"), cert=..., key=...)
    api.get("/api/v1/nodes")                  # dict, or None for 404
    api.request("POST", path, body)           # raises ApiError on other HTTP errors
"""

from __future__ import annotations

import argparse
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass
class Api:
    servers: tuple[str, ...]  # tried in order when one does not answer (a master restarting)
    ca: Path
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None
    timeout: float = 5.0

    def _ctx(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if self.cert and self.key:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def request(self, method: str, path: str, body: dict | None = None, *, raw: bool = False,
                content_type: str = "application/json"):
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        ctx = self._ctx()
        for i, server in enumerate(self.servers):
            req = urllib.request.Request(server + path, method=method, headers=headers, data=data)
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=self.timeout) as r:
                    text = r.read().decode()
                break
            except urllib.error.HTTPError as e:
                return self._error(e, method)
            except OSError:
                if i == len(self.servers) - 1:
                    raise
        return text if raw else (json.loads(text) if text else {})

    @staticmethod
    def _error(e: urllib.error.HTTPError, method: str):
        text = e.read().decode(errors="replace")
        if e.code == 404 and method == "GET":
            return None
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            text = doc.get("message", text)
        raise ApiError(e.code, text) from None

    def get(self, path: str, *, raw: bool = False):
        return self.request("GET", path, raw=raw)

    def apply(self, path: str, name: str, body: dict) -> dict:
        """Create `body` under the collection `path`, or replace the object `name` there."""
        current = self.get(f"{path}/{name}")
        if current is None:
            return self.request("POST", path, body)
        body = dict(body)
        body["metadata"] = {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
        return self.request("PUT", f"{path}/{name}", body)

    def delete(self, path: str) -> bool:
        try:
            self.request("DELETE", path)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    def ok(self, path: str = "/readyz") -> bool:
        try:
            return self.get(path, raw=True) == "ok"
        except (OSError, ApiError):
            return False


def daemon_parser() -> argparse.ArgumentParser:
    """The options every sandbox daemon takes (cluster.Sandbox._daemons passes them)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, required=True, help="the sandbox directory")
    ap.add_argument("--servers", required=True, help="the apiservers, comma-separated")
    ap.add_argument("--address", required=True, help="this daemon's address")
    ap.add_argument("--max-hours", type=float, default=24 * 7, help="exit after this long")
    return ap


def admin_api(sandbox_dir: Path, servers: str) -> Api:
    """A client of the sandbox's apiservers with its admin certificate."""
    pki = sandbox_dir / "pki"
    return Api(tuple(servers.split(",")), ca=pki / "ca.crt", cert=pki / "admin.crt", key=pki / "admin.key")
