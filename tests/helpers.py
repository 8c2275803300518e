"""Shared helpers for tests: conditioning, sampling and workflows on the real host."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def comfy_folders(
    input: Path | None = None, output: Path | None = None, temp: Path | None = None
) -> Iterator[None]:
    """ComfyUI's input, output and/or temp folder pointed at these folders (created), restored afterwards.

    The one way tests redirect ComfyUI's folders (``folder_paths``), in-process.
    """
    import folder_paths

    kinds = {"input": input, "output": output, "temp": temp}
    old = {kind: folder_paths.get_directory_by_type(kind) for kind in kinds}
    setters = {"input": folder_paths.set_input_directory, "output": folder_paths.set_output_directory,
               "temp": folder_paths.set_temp_directory}  # fmt: skip
    try:
        for kind, folder in kinds.items():
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                setters[kind](str(folder))
        yield
    finally:
        for kind, folder in old.items():
            setters[kind](folder)


def random_cond(seed: int, batch: int = 1, chunks: int = 1) -> list:
    """A ComfyUI CONDITIONING list with a seeded (B, 77*chunks, 768) text embedding."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 77 * chunks, 768, generator=g), {}]]


def sample(
    model,
    positive: list,
    negative: list,
    *,
    seed: int = 0,
    steps: int = 4,
    cfg: float = 5.0,
    sampler_name: str = "euler",
    scheduler: str = "normal",
    latent_hw: tuple[int, int] = (16, 16),
    batch: int = 1,
    denoise: float = 1.0,
    latent_image: torch.Tensor | None = None,
    callback=None,  # noqa: ANN001
    start_step: int | None = None,
) -> torch.Tensor:
    """Sample through comfy.sample, the path KSampler (and KSamplerAdvanced, with start_step) takes."""
    import comfy.sample

    if latent_image is None:
        latent_image = torch.zeros(batch, 4, *latent_hw)
    noise = comfy.sample.prepare_noise(latent_image, seed)
    return comfy.sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
        denoise=denoise, disable_pbar=True, seed=seed, callback=callback, start_step=start_step,
    )  # fmt: skip


def core_txt2img_workflow(ckpt_name: str, size: int = 64, steps: int = 2, prefix: str = "harness") -> dict:
    """API-format workflow made of core nodes only."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "chest x-ray, left pleural effusion", "clip": ["1", 1]},
        },
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": 7,
                "steps": steps,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },  # fmt: skip
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def regulated_prompt(tokenizer, text: str, positive: list, pathology_words: str = "pleural, effusion",
                     anatomy_words: str = ""):  # fmt: skip
    """The RegulatedPrompt a CXR Prompt node would give for ``text``, paired with the positive conditioning
    the test samples with (its first item's embedding stands for the text's encoding)."""
    from cxr_pack.cxr_core.attention.prompt import build_prompt
    from cxr_pack.cxr_core.attention.tokens import parse_word_list

    return build_prompt(tokenizer, text, positive[0][0][:1], parse_word_list(pathology_words), anatomy_words)
