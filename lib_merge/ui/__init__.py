"""Gradio tabs of Alloy: widgets wired to the Workbench (the only part of lib_merge that builds a UI)."""
