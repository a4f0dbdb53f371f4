"""XYZ plots: axis parsers, plans, the executor, grid images and the reservation queue (no gradio)."""
