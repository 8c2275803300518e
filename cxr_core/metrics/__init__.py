"""Metrics for counterfactual chest X-rays (definitions: docs in EVALUATION and the README's Metrics).

Plain torch on the images' device, importable without ComfyUI's node registry:
``prep`` (input checks, grey conversion), ``ssim``, ``image_scores`` (SSIM by
region, PSNR, MAE, edit localisation), ``diff_heatmap``, ``features`` (CLIP-I,
extractor fingerprints), ``inception`` (Inception-v3 from a local weight file),
``fid`` (streaming feature statistics, Frechet distance), ``validity``
(torchxrayvision classifier, optional), ``report`` and ``csv_log`` (JSON/CSV
records), ``locking`` (inter-process file locks and safe output paths).
"""
