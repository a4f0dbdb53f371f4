"""Alloy's merge core: streaming checkpoint merges described as recipes.

The core never imports gradio or the WebUI; only ``lib_merge.ui`` and ``lib_merge.host`` do.
"""

__version__ = "0.1.0"
