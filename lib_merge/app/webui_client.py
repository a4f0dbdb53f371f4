"""A running WebUI's HTTP API as Alloy's drivers use it (a study or an XYZ plot fanned out over several WebUIs):
JSON in and out, HTTP Basic for --api-auth, and every failure one line naming the WebUI and the route."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lib_merge.app.ports import GenSettings
from lib_merge.errors import BusyError, ParameterError

TIMEOUT_SECONDS = 900  # one generation on a slow machine
TXT2IMG_FIELDS = {  # GenSettings field -> /sdapi/v1/txt2img field
    "prompt": "prompt", "negative_prompt": "negative_prompt", "styles": "styles", "steps": "steps",
    "sampler": "sampler_name", "scheduler": "scheduler", "cfg_scale": "cfg_scale", "seed": "seed",
    "subseed": "subseed", "subseed_strength": "subseed_strength", "width": "width", "height": "height",
    "batch_size": "batch_size", "n_iter": "n_iter", "enable_hr": "enable_hr", "hr_scale": "hr_scale",
    "hr_upscaler": "hr_upscaler", "hr_second_pass_steps": "hr_second_pass_steps",
    "denoising_strength": "denoising_strength", "override_settings": "override_settings",
}  # fmt: skip


@dataclass(frozen=True)
class WebUIClient:
    """One running WebUI, by its address (http://host:port) and the user:password of its --api-auth."""

    url: str
    auth: str = ""
    timeout: float = TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ParameterError(f"--webui {self.url!r}: give the WebUI's address, e.g. http://127.0.0.1:7860")
        if self.auth and ":" not in self.auth:
            raise ParameterError("--auth takes USER:PASSWORD")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(self.auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as e:
            text = _error_text(e)
            error = BusyError if e.code == 409 else ParameterError
            raise error(f"{self.url}{path}: HTTP {e.code}: {text}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ParameterError(f"{self.url}: cannot reach the WebUI ({reason})") from None
        except ValueError:
            raise ParameterError(f"{self.url}{path}: the answer is not JSON (is this a WebUI with --api?)") from None

    def arch(self, title: str) -> str:
        return self.call("GET", "/alloy/v1/checkpoint?" + urllib.parse.urlencode({"title": title}))["arch"]

    def merge(self, recipe: str, log: bool = True) -> dict:
        return self.call("POST", "/alloy/v1/merge", {"recipe": recipe, "log": log})

    def restore(self) -> str:
        return self.call("POST", "/alloy/v1/restore", {})["message"]

    def gen_defaults(self) -> GenSettings:
        """What the WebUI's own generations start from (its last txt2img run, or its defaults)."""
        known = set(GenSettings.__dataclass_fields__) - {"script_args", "save_images"}
        given = self.call("GET", "/alloy/v1/gen")
        return GenSettings(**{k: v for k, v in given.items() if k in known})

    def generate(self, gen: GenSettings) -> list:
        """The images of `gen`, none saved by the WebUI. A prompt list (one prompt per image of a batch) is one
        request per prompt, prompt i at seed + i, as the WebUI numbers a batch: its API takes one prompt."""
        if isinstance(gen.prompt, list):
            seed = gen.seed or 0
            singles = [replace(gen, prompt=p, seed=seed + i, batch_size=1, n_iter=1) for i, p in enumerate(gen.prompt)]
            return [image for single in singles for image in self.generate(single)[:1]]
        body = {api: getattr(gen, field) for field, api in TXT2IMG_FIELDS.items() if getattr(gen, field) is not None}
        body.update(save_images=False, send_images=True, do_not_save_samples=True, do_not_save_grid=True)
        return self.txt2img(body)

    def font(self) -> bytes | None:
        """The WebUI's grid label font (a TrueType file), if it has one."""
        answer = self.call("GET", "/alloy/v1/font")
        return base64.b64decode(answer["data"]) if answer.get("data") else None

    def txt2img(self, body: dict) -> list:
        from PIL import Image

        images = self.call("POST", "/sdapi/v1/txt2img", body).get("images") or []
        return [Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB") for image in images]


def check_webuis(clients: list[WebUIClient]) -> None:
    if not clients:
        raise ParameterError("give one --webui at least")
    if len({c.url.rstrip("/") for c in clients}) != len(clients):
        raise ParameterError("a --webui is named twice: each WebUI is one worker")


def run_each(works: list[Callable[[], None]], name: str, on_interrupt: Callable[[], None]) -> None:
    """Each WebUI's work in a thread of its own, until all end. Ctrl-C (which reaches the waiting main
    thread) calls `on_interrupt`, so each worker ends its current step, and goes on up."""
    threads = [threading.Thread(target=work, name=f"{name}-{i}", daemon=True) for i, work in enumerate(works)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except BaseException:
        on_interrupt()
        raise


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read() or b"{}")
    except ValueError:
        return e.reason or ""
    text = body.get("error") or body.get("detail") or body.get("errors") or e.reason
    return " ".join(str(text).split())[:500]
