"""Algorithms of the CXR counterfactual pack.

Everything here imports without ComfyUI's node registry and works on bare
tensors, so it can be tested and reused outside the node graph. The node
classes in ``nodes/`` are thin wrappers around these modules.
"""
