"""Gradio tabs of Alloy (the only part of lib_merge besides host/ that imports gradio)."""
