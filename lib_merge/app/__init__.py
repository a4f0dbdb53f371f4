"""The application: the Workbench and its use cases, the host ports, history, naming, Dice and plots.

Every surface (CLI, HTTP, WebUI tabs) calls this layer; it calls the engine. Nothing here
imports gradio, fastapi or the WebUI.
"""
