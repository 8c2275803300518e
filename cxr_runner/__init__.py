"""Headless helpers: start a local ComfyUI server and drive it over HTTP.

Pure clients: nothing here imports ComfyUI, so the package runs from any
Python that has ``websocket-client`` (optional, for live progress).
"""
