"""`python -m lib_merge ui`: the Alloy tabs without the WebUI; merges are written to files."""

from __future__ import annotations

from lib_merge.host.api import add_routes
from lib_merge.host.session import Workbench
from lib_merge.host.standalone import FolderHost
from lib_merge.ui.app import build_ui
from lib_merge.ui.compat import enable_queue, mount


def create_app(models_dir: str | None = None, workbench: Workbench | None = None):
    """A FastAPI app serving the tabs at / and the HTTP API at /alloy/v1 (tests pass their own workbench)."""
    from fastapi import FastAPI

    workbench = workbench or Workbench(FolderHost(models_dir or "."))
    demo = enable_queue(build_ui(workbench))
    app = FastAPI(title="Alloy")
    add_routes(app, workbench)
    return mount(app, demo), workbench


def serve(models_dir: str, host: str = "127.0.0.1", port: int = 7870) -> None:
    import uvicorn

    app, _ = create_app(models_dir)
    print(f"Alloy on http://{host}:{port}/ (models: {models_dir})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
