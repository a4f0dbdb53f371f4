"""AUTOMATIC1111 WebUI entry point for Alloy: kept thin, everything lives in lib_merge.

Makes lib_merge importable, registers the tab, settings, API routes and callbacks, and adds an
always-on txt2img script whose only job is to hand Alloy the txt2img components (by elem_id)
and the settings of the user's last txt2img run.
"""

import os
import sys

_EXTENSION_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _EXTENSION_ROOT not in sys.path:
    sys.path.insert(0, _EXTENSION_ROOT)
os.environ.setdefault("ALLOY_HOME", os.path.join(_EXTENSION_ROOT, "user-data"))

from modules import scripts  # noqa: E402

from lib_merge.surfaces import webui as webui_entry  # noqa: E402

webui_entry.register()


class AlloyTxt2ImgSettings(scripts.Script):
    def title(self):
        return "Alloy: txt2img settings reader"

    def show(self, is_img2img):
        return False if is_img2img else scripts.AlwaysVisible

    def ui(self, is_img2img):
        return []

    def after_component(self, component, **kwargs):
        elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
        if elem_id:
            webui_entry.workbench().host.components[elem_id] = component

    def before_process(self, p, *args):
        bench = webui_entry.workbench()
        bench.host.before_process(p, bench)

    def postprocess(self, p, processed, *args):
        bench = webui_entry.workbench()
        bench.host.after_process(p, bench)
