"""Attention regulation for the SD1.5 UNet (docs/METHOD.md sections 1-4)."""
