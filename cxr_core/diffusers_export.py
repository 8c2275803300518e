"""The random SD1.5 model as a diffusers-format folder, the layout RoentGen-type models ship in.

unet/, text_encoder/ (transformers CLIPTextModel keys), vae/ (diffusers
AutoencoderKL keys), scheduler/ and model_index.json, weights fp16 safetensors:
the same seeded weights as the SD1.5 checkpoint of random_models.py. Key names
come from the host's own diffusers mappings (comfy.utils.unet_to_diffusers,
comfy.diffusers_convert), inverted, and are checked by converting back.
ComfyUI's DiffusersLoader (comfy.diffusers_load) reads the folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .random_models import build_sd15_base_model, fp16_state_dict, init_random_, random_vae, write_atomically

log = logging.getLogger("cxr_counterfactual.diffusers_export")

RANDOM_DIFFUSERS_NAME = "cxr_random_sd15_diffusers_seed{seed}"


def random_diffusers_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    return Path(cache_dir) / "diffusers" / RANDOM_DIFFUSERS_NAME.format(seed=seed)


def ensure_random_sd15_diffusers(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the random SD1.5 model as a diffusers-format folder once; later calls reuse it."""
    path = random_diffusers_path(cache_dir, seed)
    if not path.is_dir():
        log.info("generating a random SD1.5 diffusers folder (seed %d) at %s", seed, path)
    return write_atomically(path, lambda tmp: write_random_sd15_diffusers(tmp, seed))


@torch.no_grad()
def write_random_sd15_diffusers(folder: str | os.PathLike, seed: int = 0) -> None:
    """The random SD1.5 model in the diffusers layout a RoentGen-type model is distributed in.

    unet/, text_encoder/ (transformers CLIPTextModel keys), vae/ (diffusers AutoencoderKL keys),
    scheduler/ and model_index.json; weights fp16 safetensors. Key names come from the host's own
    diffusers mappings (comfy.utils.unet_to_diffusers, comfy.diffusers_convert), inverted.
    """
    import json

    import comfy.sd1_clip
    import comfy.utils
    import safetensors.torch

    root = Path(folder)
    model = build_sd15_base_model(320, seed, torch.float16)
    unet_sd = model.diffusion_model.state_dict()
    to_ldm = comfy.utils.unet_to_diffusers(model.model_config.unet_config)
    unet = {hf: unet_sd[ldm] for hf, ldm in to_ldm.items() if ldm in unet_sd}
    missing = set(unet_sd) - set(to_ldm.values())
    if missing:
        raise RuntimeError(f"diffusers export: UNet keys without a diffusers name: {sorted(missing)[:5]}")
    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float16)
    init_random_(clip, seed + 1)
    prefix = "clip_l.transformer."
    text = {k[len(prefix) :]: v for k, v in clip.state_dict().items() if k.startswith(prefix + "text_model.")}
    text["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    vae = vae_to_diffusers(random_vae(seed + 2, torch.float16).state_dict())

    files = {"unet/diffusion_pytorch_model.safetensors": unet, "text_encoder/model.safetensors": text,
             "vae/diffusion_pytorch_model.safetensors": vae}  # fmt: skip
    for name, sd in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(
            fp16_state_dict(sd), str(root / name), metadata={"cxr_counterfactual": "random-weights"}
        )
    configs = _diffusers_configs()
    for name, cfg in configs.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(cfg, indent=2) + "\n")


def vae_to_diffusers(ldm_vae: dict) -> dict:
    """LDM AutoencoderKL keys -> diffusers keys: the inverse of comfy.diffusers_convert.convert_vae_state_dict.

    Checked by converting back with the host's function: the same keys and shapes must come out.
    """
    import comfy.diffusers_convert as dc

    out = {}
    for k, v in ldm_vae.items():
        name = k
        if ".mid.attn_1." in k:
            head, tail = k.split(".mid.attn_1.")
            for sd_part, hf_part in (("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."),
                                     ("v.", "to_v."), ("proj_out.", "to_out.0.")):  # fmt: skip
                if tail.startswith(sd_part):
                    tail = hf_part + tail[len(sd_part) :]
                    break
            name = f"{head}.mid_block.attentions.0.{tail}"
            if v.ndim == 4 and tail.endswith("weight") and "group_norm" not in tail:
                v = v.reshape(v.shape[0], v.shape[1])
        else:
            for sd_part, hf_part in dc.vae_conversion_map:
                name = name.replace(sd_part, hf_part)
        out[name] = v
    back = dc.convert_vae_state_dict(dict(out))
    if {k: tuple(t.shape) for k, t in back.items()} != {k: tuple(t.shape) for k, t in ldm_vae.items()}:
        raise RuntimeError("diffusers export: the VAE keys do not convert back to the LDM layout")
    return out


def _diffusers_configs() -> dict:
    """The configuration files of an SD1.5 diffusers folder (ComfyUI reads only the weights)."""
    unet = {
        "_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 4, "out_channels": 4,
        "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }  # fmt: skip
    vae = {
        "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "sample_size": 512,
        "scaling_factor": 0.18215,
    }  # fmt: skip
    text = {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 768,
        "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
        "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu",
    }  # fmt: skip
    scheduler = {
        "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "prediction_type": "epsilon", "skip_prk_steps": True,
    }  # fmt: skip
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "_cxr_counterfactual": "random weights: shows mechanics, not medicine",
    }
    return {"model_index.json": index, "unet/config.json": unet, "vae/config.json": vae,
            "text_encoder/config.json": text, "scheduler/scheduler_config.json": scheduler}  # fmt: skip
