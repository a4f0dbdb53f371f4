"""AUTOMATIC1111 WebUI entry point for Alloy: kept thin, everything lives in lib_merge.

For now it only makes `lib_merge` importable inside the WebUI (the extension folder is not
on sys.path by default); the Alloy tab, settings and API routes are registered here in a
later step through lib_merge.host and lib_merge.ui.
"""

import os
import sys

_EXTENSION_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _EXTENSION_ROOT not in sys.path:
    sys.path.insert(0, _EXTENSION_ROOT)
