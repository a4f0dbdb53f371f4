"""`python -m lib_merge ui`: the Alloy tabs without the WebUI; merges are written to files.

It binds 127.0.0.1 unless told otherwise. With `--auth USER:PASS` every request (the page, Gradio's
own routes and websockets, the HTTP API) needs those HTTP Basic credentials; binding any other
address without them is refused unless `--insecure` says the exposure is meant.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from dataclasses import dataclass

from lib_merge.errors import ParameterError
from lib_merge.host.api import add_routes
from lib_merge.host.session import Workbench
from lib_merge.host.standalone import FolderHost
from lib_merge.ui.app import build_ui
from lib_merge.ui.compat import enable_queue, mount


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 7870
    auth: dict[str, str] | None = None  # user -> password
    insecure: bool = False  # bind a non-loopback address without auth anyway


def parse_auth(text: str) -> dict[str, str]:
    """`user:pass[,user2:pass2]`."""
    found = {}
    for pair in text.split(","):
        user, sep, password = pair.strip().partition(":")
        if not sep or not user or not password:
            raise ParameterError("--auth takes USER:PASS (several separated by commas)")
        found[user] = password
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BasicAuth:
    """ASGI middleware: HTTP Basic credentials on every request and websocket, or 401."""

    def __init__(self, app, credentials: dict[str, str]):
        self.app = app
        self.credentials = credentials

    def allowed(self, header: bytes | None) -> bool:
        if not header or not header[:6].lower() == b"basic ":
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected = self.credentials.get(user)
        return expected is not None and secrets.compare_digest(password.encode(), expected.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            header = dict(scope.get("headers") or []).get(b"authorization")
            if not self.allowed(header):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"www-authenticate", b'Basic realm="Alloy"'), (b"content-type", b"text/plain")],
                    }
                )
                await send({"type": "http.response.body", "body": b"Alloy: authentication required\n"})
                return
        await self.app(scope, receive, send)


def create_app(models_dir: str | None = None, workbench: Workbench | None = None, auth: dict[str, str] | None = None):
    """A FastAPI app serving the tabs at / and the HTTP API at /alloy/v1 (tests pass their own workbench)."""
    from fastapi import FastAPI

    workbench = workbench or Workbench(FolderHost(models_dir or "."))
    demo = enable_queue(build_ui(workbench))
    app = FastAPI(title="Alloy")
    add_routes(app, workbench)
    served = mount(app, demo)
    return (BasicAuth(served, auth) if auth else served), workbench


def serve(models_dir: str, options: ServeOptions) -> None:
    import uvicorn

    if not is_loopback(options.host) and not options.auth and not options.insecure:
        raise ParameterError(
            f"binding {options.host} lets other machines merge and read models here: "
            "give --auth USER:PASS (or --insecure if that is meant)"
        )
    app, workbench = create_app(models_dir, auth=options.auth)
    for line in workbench.clean_leftovers():
        print(f"Alloy: {line}", flush=True)
    guarded = " (HTTP Basic auth)" if options.auth else ""
    print(f"Alloy on http://{options.host}:{options.port}/{guarded} (models: {models_dir})", flush=True)
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning")
