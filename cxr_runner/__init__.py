"""Headless helpers: start a local ComfyUI server and drive it over HTTP (the ``cxr-runner`` command).

Pure clients: nothing here imports ComfyUI or torch. ``pip install .`` installs the
package with its libraries (requests, websocket-client, tqdm, filelock, Pillow);
the only parts of the pack it reads are torch-free (``shared.py``).
"""
