"""Metrics for counterfactual chest X-rays (definitions: registry.py and the README's Metrics section).

Plain torch on the images' device, importable without ComfyUI's node registry:
``registry`` (every per-image metric defined once; torch-free, the runner reads
it too), ``prep`` (input checks, grey conversion), ``ssim``, ``image_scores``
(the registry's SSIM/PSNR/MAE by region, organ SSIM, edit localisation),
``diff_heatmap``, ``features`` (CLIP-I, extractor fingerprints), ``inception``
(Inception-v3 from a local weight file), ``fid`` (streaming feature statistics,
Frechet distance), ``validity`` (torchxrayvision classifier, optional),
``report`` and ``csv_log`` (JSON/CSV records), ``locking`` (inter-process file
locks with filelock, atomic writes and safe output paths; torch-free).
"""
