"""A real ComfyUI CLIP (comfy.sd.CLIP around the host's SD1 CLIP-L text model) with one layer and seeded
random weights: the CXR Prompt node encodes with it exactly as with a checkpoint's CLIP, in a fraction of a
second and without any download. Its 768-wide output fits the tiny UNet's context."""

from __future__ import annotations

import torch

TINY_CLIP_L = {
    "hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 64, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "num_attention_heads": 12, "num_hidden_layers": 1, "projection_dim": 768,
    "vocab_size": 49408, "bos_token_id": 0, "eos_token_id": 49407, "pad_token_id": 1,
}  # fmt: skip


def build_tiny_clip(seed: int = 0):  # noqa: ANN201
    import comfy.sd
    import comfy.sd1_clip

    class Target:
        params = {"textmodel_json_config": TINY_CLIP_L, "clip_model": comfy.sd1_clip.SDClipModel}
        clip = comfy.sd1_clip.SD1ClipModel
        tokenizer = comfy.sd1_clip.SD1Tokenizer

    clip = comfy.sd.CLIP(Target(), model_options={"load_device": torch.device("cpu"),
                                                   "offload_device": torch.device("cpu"), "dtype": torch.float32})  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in clip.cond_stage_model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif p.ndim == 0 or "logit_scale" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return clip
