"""The WebUI double served over HTTP, as a WebUI started with --api is: Alloy's /alloy/v1 routes and
/sdapi/v1/txt2img (the fields a client sends, the double's images as base64 PNG). For the tests of a study
driven over several WebUIs: `python webui_server.py ROOT PORT MODEL_A MODEL_B MODEL_C`."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import WebUI  # noqa: E402


def serve(root: str, port: str, *models: str) -> None:
    import uvicorn
    from fastapi import Body, FastAPI

    from lib_merge.surfaces.http import add_routes

    webui = WebUI(Path(root), [Path(m) for m in models])
    from modules import call_queue, processing

    app = FastAPI()
    add_routes(app, webui.workbench)

    def txt2img(body: dict = Body(...)) -> dict:  # noqa: B008 - FastAPI's way of taking a JSON body
        fields = {"prompt": "", "negative_prompt": "", "seed": -1, "steps": 20, "sampler_name": "Euler a",
                  "cfg_scale": 7.0, "width": 512, "height": 512, "batch_size": 1, "n_iter": 1}  # fmt: skip
        fields.update({k: v for k, v in body.items() if k in fields})
        with call_queue.queue_lock:  # one job at a time, as the WebUI's API does
            processed = processing.process_images(processing.StableDiffusionProcessingTxt2Img(**fields))
        images = []
        for image in processed.images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            images.append(base64.b64encode(buffer.getvalue()).decode())
        return {"images": images, "parameters": fields, "info": processed.info}

    app.add_api_route("/sdapi/v1/txt2img", txt2img, methods=["POST"])
    print("serving", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")


if __name__ == "__main__":
    serve(*sys.argv[1:])
