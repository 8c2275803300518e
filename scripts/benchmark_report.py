"""Reports of scripts/benchmark.py: CSV, markdown table, JSON and a PNG chart of the ratios."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from import_pack import import_pack
from PIL import Image, ImageDraw

COLUMNS = ("size", "batch", "config", "seconds", "time_ratio", "peak_mib", "mem_ratio")


def write_reports(rows: list[dict], env: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "benchmark.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "benchmark.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
    (out / "benchmark.md").write_text(markdown(rows, env))
    chart(rows, env, out / "benchmark.png")


def markdown(rows: list[dict], env: dict) -> str:
    head = (
        f"Device: {env['device']}; torch {env['torch']}"
        + (f" (CUDA {env['cuda']})" if env.get("cuda") else "")
        + f"; attention backend `{env['attention_backend']}`; UNet model_channels {env['channels']} "
        f"({env['dtype']}); {env['steps']} steps, euler, cfg 5, denoise {env.get('denoise', 1.0)}; "
        f"{env['repeat']} interleaved rounds: seconds is the median run, the time ratio the median of the "
        "rounds' ratios to plain (range: lowest and highest round).\n\n"
    )
    lines = [
        "| size | batch | config | seconds | time ratio | range | peak MiB | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['batch']} | {r['config']} | {r['seconds']:.3f} | {r['time_ratio']:.3f} | "
            f"{r['ratio_range'][0]:.3f}-{r['ratio_range'][1]:.3f} | {r['peak_mib']:.0f} | {r['mem_ratio']:.3f} |"
        )
    return head + "\n".join(lines) + "\n"


def chart(rows: list[dict], env: dict, path: Path) -> None:
    """Two panels (time ratio, memory ratio): x = (size, batch) cells in order, one line per config."""
    import_pack()
    from cxr_pack.cxr_runner.charts import colour, font

    cells = list(dict.fromkeys((r["size"], r["batch"]) for r in rows))
    configs = [c for c in dict.fromkeys(r["config"] for r in rows) if c != "plain"]
    pw, ph, left, top, bottom = max(320, 70 * len(cells) + 80), 260, 56, 40, 46
    img = Image.new("RGB", (2 * pw, ph + 26 + 16 * len(configs)), "white")
    d = ImageDraw.Draw(img)
    f, small = font(13), font(11)
    d.text((8, 4), f"cost vs plain sampling: {env['device']}, {env['steps']} steps", fill="black", font=f)
    for p, (key, title) in enumerate((("time_ratio", "time ratio"), ("mem_ratio", "peak memory ratio"))):
        x0 = p * pw
        vals = [r[key] for r in rows if r["config"] != "plain"] or [1.0]
        lo, hi = min(1.0, min(vals)) * 0.95, max(1.05, max(vals)) * 1.05
        plot_w, plot_h = pw - left - 16, ph - top - bottom

        def xy(i: int, v: float, x0: int = x0, lo: float = lo, hi: float = hi, plot_w: int = plot_w,
               plot_h: int = plot_h) -> tuple[float, float]:  # fmt: skip
            x = x0 + left + (plot_w * (i + 0.5) / max(1, len(cells)))
            return x, top + plot_h * (1 - (v - lo) / (hi - lo))

        d.text((x0 + left, top - 20), title, fill="black", font=f)
        d.rectangle([x0 + left, top, x0 + left + plot_w, top + plot_h], outline=(160, 160, 160))
        for t in (lo, 1.0, hi):
            if t == 1.0 and min(1.0 - lo, hi - 1.0) < 0.08 * (hi - lo):
                continue  # too close to an end label to print legibly
            y = xy(0, t)[1]
            d.line([x0 + left, y, x0 + left + plot_w, y], fill=(225, 225, 225))
            d.text((x0 + 6, y - 7), f"{t:.2f}", fill="black", font=small)
        for i, (size, batch) in enumerate(cells):
            d.text((xy(i, lo)[0] - 22, top + plot_h + 6), f"{size}px", fill="black", font=small)
            d.text((xy(i, lo)[0] - 12, top + plot_h + 20), f"b{batch}", fill="black", font=small)
        for c, config in enumerate(configs):
            pts = [xy(i, r[key]) for i, cell in enumerate(cells) for r in rows
                   if (r["size"], r["batch"]) == cell and r["config"] == config]  # fmt: skip
            if len(pts) > 1:
                d.line(pts, fill=colour(c), width=2)
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour(c))
    for c, config in enumerate(configs):
        y = ph + 26 + 16 * c - 20
        d.rectangle([12, y + 3, 24, y + 13], fill=colour(c))
        d.text((30, y), config, fill="black", font=small)
    img.save(path)
