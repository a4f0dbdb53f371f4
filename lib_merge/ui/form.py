"""The merge form: the widgets of MERGE_FIELDS as one flat input list and back as one dict."""

from __future__ import annotations

from dataclasses import dataclass

from lib_merge.ui.compat import update
from lib_merge.ui.values import MERGE_FIELDS


@dataclass
class Form:
    widgets: dict  # field name -> component, or a list of components (slider groups)

    def components(self) -> list:
        flat = []
        for name in MERGE_FIELDS:
            w = self.widgets[name]
            flat.extend(w if isinstance(w, list) else [w])
        return flat

    def values(self, raw) -> dict:
        raw = list(raw)
        out, i = {}, 0
        for name in MERGE_FIELDS:
            w = self.widgets[name]
            if isinstance(w, list):
                out[name] = raw[i : i + len(w)]
                i += len(w)
            else:
                out[name] = raw[i]
                i += 1
        return out

    def updates(self, values: dict) -> list:
        """gr.update()s in components() order: given fields change, the rest stay."""
        result = []
        for name in MERGE_FIELDS:
            w = self.widgets[name]
            given = values.get(name)
            if isinstance(w, list):
                result.extend(update(value=v) for v in given) if given else result.extend(update() for _ in w)
            else:
                result.append(update(value=given) if name in values else update())
        return result
