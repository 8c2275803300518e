"""API workflows for the load and fault test: plain SDEdit, the regulated counterfactual and its ablations.

All at 64 px with a few steps, on the full-size random SD1.5 checkpoint, so a
few dozen prompts fit a CI minute or two on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from cxr_input_helpers import label_map, synthetic_chest

FILM, LABELS = "load_film.png", "load_labels.png"
PROMPT = "chest x-ray, left pleural effusion"


def write_inputs(input_dir: Path, h: int = 128, w: int = 112) -> None:
    """A synthetic radiograph (lungs dark, body grey) and its label map with an auto legend sidecar."""
    organs = synthetic_chest(h, w)
    film = np.full((h, w), 150, np.uint8)
    film[organs["right_lung"] | organs["left_lung"]] = 60
    film[organs["heart"]] = 200
    rng = np.random.default_rng(0)
    film = np.clip(film.astype(np.int16) + rng.integers(-10, 11, film.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(input_dir / FILM), film)
    cv2.imwrite(str(input_dir / LABELS), label_map(organs, {"right_lung": 1, "left_lung": 2, "heart": 3}))
    (input_dir / LABELS).with_suffix(".json").write_text(
        json.dumps({"1": "right lung", "2": "left lung", "3": "heart"})
    )


def _inputs(ckpt: str) -> dict:
    return {
        "1": {"class_type": "CXRImageLoader", "inputs": {"image": FILM, "working_size": 64,
              "resize_mode": "letterbox", "intensity": "auto", "invert": False}},
        "2": {"class_type": "OrganMaskLoader", "inputs": {"source": "label_map", "path": LABELS, "legend": "auto",
              "legend_json": "", "image_id": "", "min_quality": 0.7, "seg_model": "chestx_det_pspnet",
              "organs": "all", "mask_mode": "binary", "threshold": 0.5, "geometry": ["1", 1], "image": ["1", 0]}},
        "3": {"class_type": "PathologySpatialPrior", "inputs": {"organ_masks": ["2", 0], "pathology": "effusion",
              "side": "left", "extent": 0.35, "feather_px": 2.0, "zone": "lower", "image": ["1", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "CXRPrompt", "inputs": {"text": PROMPT, "pathology_words": "pleural, effusion",
              "clip": ["4", 1]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "7": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["4", 2]}},
    }  # fmt: skip


def _modules(correction_end: float) -> dict:
    return {
        "8": {"class_type": "AnatomyAttentionGate", "inputs": {"model": ["4", 0], "organ_masks": ["2", 0],
              "organs": "all", "strength": 4.0, "hard": False, "tau": 0.5, "sites": "64,32", "start_percent": 0.0,
              "end_percent": 1.0, "background": "free", "enabled": True}},
        "9": {"class_type": "PathologyCrossAttnReweight", "inputs": {"model": ["8", 0], "prompt": ["5", 1],
              "prior": ["3", 0], "lambda_in": 3.0,
              "lambda_out": 3.0, "start_percent": 0.0, "end_percent": 0.4, "sites": "all", "enabled": True}},
        "10": {"class_type": "EnergyLatentCorrector", "inputs": {"model": ["9", 0], "prompt": ["5", 1],
               "prior": ["3", 0], "eta": 30.0, "iterations": 1,
               "end_percent": correction_end, "kappa": 0.1, "energy_threshold": 0.2, "sites": "16",
               "truncate": True, "enabled": True}},
    }  # fmt: skip


def workflow(kind: str, ckpt: str, seed: int, tag: str, csv_name: str, steps: int = 3,
             correction_end: float = 0.5) -> dict:  # fmt: skip
    """``kind``: plain (no module), regulated (gate + reweight + corrector) or ablated_<gate|reweight|corrector>."""
    wf = _inputs(ckpt)
    model = ["4", 0]
    if kind != "plain":
        wf.update(_modules(correction_end))
        model = ["10", 0]
        if kind.startswith("ablated_"):
            node = {"gate": "8", "reweight": "9", "corrector": "10"}[kind.removeprefix("ablated_")]
            wf[node]["inputs"]["enabled"] = False
    wf["12"] = {"class_type": "KSampler", "inputs": {"model": model, "positive": ["5", 0], "negative": ["6", 0],
                "latent_image": ["7", 0], "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler",
                "scheduler": "normal", "denoise": 0.6}}  # fmt: skip
    wf["13"] = {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["4", 2]}}
    wf["16"] = {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": f"load/{tag}"}}
    wf["17"] = {"class_type": "CXRMetrics", "inputs": {"original": ["1", 0], "counterfactual": ["13", 0],
                "target_region": ["3", 0], "organ_masks": ["2", 0], "target_organs": "left_lung",
                "run_tag": tag, "csv_name": csv_name, "validity_label": ""}}  # fmt: skip
    return wf
