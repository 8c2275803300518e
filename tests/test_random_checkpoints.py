"""The generated diffusers folder and SDXL-family checkpoint load through the host's own loaders, exactly."""

from __future__ import annotations

import pytest
import torch
from cxr_pack.cxr_core.diffusers_export import ensure_random_sd15_diffusers, vae_to_diffusers
from cxr_pack.cxr_core.random_models import ensure_random_sdxl_checkpoint
from cxr_pack.nodes.attention_sites import model_scheme, model_sites


def test_vae_keys_convert_back_with_the_hosts_function() -> None:
    import comfy.diffusers_convert
    from cxr_pack.cxr_core.random_models import random_vae

    sd = random_vae(3, torch.float32).state_dict()
    hf = vae_to_diffusers(sd)
    assert "decoder.up_blocks.0.resnets.0.norm1.weight" in hf, (
        "the key ComfyUI uses to recognise diffusers VAEs"
    )
    assert hf["encoder.mid_block.attentions.0.to_q.weight"].ndim == 2, (
        "diffusers attention weights are linear"
    )
    back = comfy.diffusers_convert.convert_vae_state_dict(hf)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


@pytest.mark.checkpoint
def test_diffusers_folder_loads_through_the_diffusers_loader_with_the_checkpoints_weights(
    cache_dir, random_checkpoint
) -> None:
    """DiffusersLoader's loader gives the same UNet, text encoder and VAE as the SD1.5 checkpoint of the seed."""
    import comfy.diffusers_load
    import safetensors

    folder = ensure_random_sd15_diffusers(cache_dir, seed=0)
    for part in ("model_index.json", "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                 "vae/diffusion_pytorch_model.safetensors", "unet/config.json"):  # fmt: skip
        assert (folder / part).is_file(), part
    with safetensors.safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight" in f.keys(), (
            "diffusers names"
        )
    unet, clip, vae = comfy.diffusers_load.load_diffusers(str(folder), output_vae=True, output_clip=True)
    scheme = model_scheme(unet)
    assert (scheme.family, scheme.native_px, len(scheme.sites)) == ("SD1.x", 512, 16)
    assert model_sites(unet, "64,32") == model_sites(unet, "fine, mid")
    parts = {
        "model.diffusion_model.": unet.model.diffusion_model.state_dict(),
        "first_stage_model.": vae.first_stage_model.state_dict(),
    }
    with safetensors.safe_open(str(random_checkpoint), "pt") as ckpt:
        names = set(ckpt.keys())
        for prefix, sd in parts.items():
            for k, v in sd.items():
                ref = ckpt.get_tensor(prefix + k)
                assert torch.equal(v.to(ref.dtype), ref), prefix + k
        clip_sd = clip.cond_stage_model.state_dict()
        key = "clip_l.transformer.text_model.encoder.layers.11.mlp.fc2.weight"
        ref_key = "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight"
        assert ref_key in names and torch.equal(clip_sd[key].to(torch.float16), ckpt.get_tensor(ref_key))


@pytest.mark.checkpoint
def test_sdxl_family_checkpoint_is_detected_as_sdxl(cache_dir) -> None:
    import comfy.sd

    path = ensure_random_sdxl_checkpoint(cache_dir, seed=0)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path))
    assert type(model.model.model_config).__name__ == "Segmind_Vega"
    assert type(clip.cond_stage_model).__name__ == "SDXLClipModel"
    scheme = model_scheme(model)
    assert (scheme.family, scheme.prediction, scheme.native_px, scheme.grid_sizes()) == (
        "SDXL",
        "epsilon",
        1024,
        (64, 32),
    )
    assert [s.depth for s in scheme.sites if s.level == 2] == [2] * 5, (
        "Vega: two transformer blocks per 1/32 site"
    )
    assert model_sites(model, "coarse") == (
        ("input", 7),
        ("input", 8),
        ("output", 0),
        ("output", 1),
        ("output", 2),
    )
    with pytest.raises(ValueError, match="'middle' names no attention site"):
        model_sites(model, "middle")  # Vega's middle block has no attention
    tokens = clip.tokenize("chest x-ray, left pleural effusion")
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    assert tuple(cond.shape[-1:]) == (2048,) and tuple(pooled.shape) == (1, 1280)
