"""`python -m lib_merge ui`: the Alloy tabs without the WebUI; merges are written to files.

It binds 127.0.0.1 unless told otherwise. With `--auth USER:PASS` every request (the page, Gradio's
own routes and websockets, the HTTP API) needs those HTTP Basic credentials; binding any other
address without them is refused unless `--insecure` says the exposure is meant.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from lib_merge.app.optimize.desk import OptimizeDesk
from lib_merge.app.plots.desk import PlotDesk
from lib_merge.app.ports import HostConfig
from lib_merge.app.workbench import Workbench
from lib_merge.errors import ParameterError
from lib_merge.host.folder import FolderHost
from lib_merge.io.device import check_device
from lib_merge.io.tempfiles import remove_own_temp_files
from lib_merge.surfaces.http import add_routes
from lib_merge.ui.app import build_ui
from lib_merge.ui.compat import enable_queue, internal_token, mount


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 7870
    auth: dict[str, str] | None = None  # user -> password
    insecure: bool = False  # bind a non-loopback address without auth anyway
    device: str = "cpu"  # where merges, re-basin matching and LoRA extraction compute (the WebUI's setting)


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
    """ASGI middleware: HTTP Basic credentials on every request, or 401.

    A browser that passed the check gets a session cookie, because browsers do not send Basic credentials
    with every request (Gradio 3's queue runs over a websocket); the cookie is accepted in their place.
    Gradio 3's queue also calls the app over loopback with its own bearer token (`internal_token`).
    """

    COOKIE = "alloy_session"
    SESSIONS = 1000  # the newest ones are kept

    def __init__(self, app, credentials: dict[str, str], internal_token: Callable[[], str | None] = lambda: None):
        self.app = app
        self.credentials = credentials
        self.internal_token = internal_token
        self.sessions: OrderedDict[str, None] = OrderedDict()

    def internal(self, scope, header: bytes | None) -> bool:
        token = self.internal_token()
        client = (scope.get("client") or ("",))[0]
        if not token or not header or not is_loopback(client):
            return False
        return secrets.compare_digest(header, f"Bearer {token}".encode())

    def allowed(self, header: bytes | None) -> bool:
        if not header or not header[:6].lower() == b"basic ":
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected = self.credentials.get(user)
        return expected is not None and secrets.compare_digest(password.encode(), expected.encode())

    def session(self, header: bytes | None) -> bool:
        if not header:
            return False
        try:
            cookie = SimpleCookie(header.decode("latin-1"))
        except CookieError:
            return False
        token = cookie[self.COOKIE].value if self.COOKIE in cookie else ""
        return any(secrets.compare_digest(token, known) for known in self.sessions)

    def new_session(self) -> str:
        token = secrets.token_urlsafe(32)
        self.sessions[token] = None
        while len(self.sessions) > self.SESSIONS:
            self.sessions.popitem(last=False)
        return token

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.session(headers.get(b"cookie")) or self.internal(scope, headers.get(b"authorization")):
            await self.app(scope, receive, send)
            return
        if not self.allowed(headers.get(b"authorization")):
            await self._deny(scope, send)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        cookie = f"{self.COOKIE}={self.new_session()}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    @staticmethod
    async def _deny(scope, send) -> None:
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


def create_app(models_dir: str | None = None, workbench: Workbench | None = None, auth: dict[str, str] | None = None):
    """A FastAPI app serving the tabs at / and the HTTP API at /alloy/v1 (tests pass their own workbench)."""
    app, desk = _app_and_desk(models_dir, workbench, auth)
    return app, desk.workbench


def _app_and_desk(
    models_dir: str | None, workbench: Workbench | None, auth: dict[str, str] | None, device: str = "cpu"
):
    from fastapi import FastAPI

    workbench = workbench or Workbench(FolderHost(models_dir or ".", HostConfig(device=device)))
    desk, studies = PlotDesk(workbench), OptimizeDesk(workbench)
    demo = enable_queue(build_ui(workbench, desk, studies))
    app = FastAPI(title="Alloy")
    add_routes(app, workbench, desk=desk, studies=studies)
    served = mount(app, demo)
    return (BasicAuth(served, auth, lambda: internal_token(demo)) if auth else served), desk


def serve(models_dir: str, options: ServeOptions) -> None:
    import uvicorn

    if not is_loopback(options.host) and not options.auth and not options.insecure:
        raise ParameterError(
            f"binding {options.host} lets other machines merge and read models here: "
            "give --auth USER:PASS (or --insecure if that is meant)"
        )
    check_device(options.device)  # refused at start, not at the first merge
    app, desk = _app_and_desk(models_dir, None, options.auth, options.device)
    for line in desk.workbench.clean_leftovers():
        print(f"Alloy: {line}", flush=True)
    guarded = " (HTTP Basic auth)" if options.auth else ""
    print(f"Alloy on http://{options.host}:{options.port}/{guarded} (models: {models_dir}, device: {options.device})",
          flush=True)  # fmt: skip
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning")
    _run_server(config, desk.stop, lambda: remove_own_temp_files(desk.workbench.host.save_folder()))


SHUTDOWN_GRACE = 10.0  # seconds a stop signal waits for open connections and the app's shutdown


def _run_server(config, stop_work: Callable[[], object], last_cleanup: Callable[[], object]) -> None:
    """uvicorn's server. A stop signal first stops the running merge, plot or queue, which unwind and remove
    their temporary files; the server then exits when its requests have ended, and within SHUTDOWN_GRACE
    even when a browser's open queue connection or the Gradio app's shutdown would keep it waiting forever
    (seen on Gradio 3): then `last_cleanup` removes what this process was still writing."""
    import uvicorn

    def exit_now(code: int) -> None:
        last_cleanup()
        os._exit(code)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            stop_work()
            super().handle_exit(sig, frame)
            timer = threading.Timer(SHUTDOWN_GRACE, exit_now, args=(128 + int(sig),))
            timer.daemon = True
            timer.start()

    Server(config).run()
