"""--fast-vae: TAESD's quality cost and decode speed against the SD VAE decoder.

Quality: every InstantRestore demo face (``<shared>/data/instantrestore/*/gt.png``, resized to
``--size``) goes through TAESD's encoder and decoder; PSNR/SSIM (streamrestore.eval.metrics, RGB)
of the round trip against the input. With ``--sd-vae DIR`` (a local ``stabilityai/sd-vae-ft-mse``
folder: config.json + diffusion_pytorch_model.safetensors) the face is also encoded with the SD
VAE (latent mean x 0.18215, as the restorer does) and that *same* latent decoded by both the SD VAE
and TAESD: PSNR/SSIM of each against the input and of TAESD against the VAE decode, which is the
cost ``--fast-vae`` adds to the paper-scale model.

Speed: ms to decode one latent of a ``--size`` face (batch 1) with TAESD's decoder and with the
paper-scale VAE decoder (sd-vae-ft-mse architecture, random weights: speed does not depend on
their values), plain and with the release's decoder LoRA unmerged (as the eager backend runs it).

    python benchmarks/bench_fast_vae.py --device cpu --size 512 --vae-iters 1
    python benchmarks/bench_fast_vae.py --device cuda --dtype fp16 --sd-vae ~/models/sd-vae-ft-mse
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamrestore.bench import DTYPES, median_seconds  # noqa: E402
from streamrestore.eval.metrics import psnr, ssim  # noqa: E402
from streamrestore.model.config import PAPER_VAE_LORA_TARGETS, SD_VAE_FT_MSE, LoraSettings  # noqa: E402
from streamrestore.model.fast_vae import load_taesd  # noqa: E402


def timed_ms(fn, device, iters: int, warmup: int) -> float:
    """Median milliseconds of ``fn()`` over ``iters`` runs after ``warmup`` runs."""
    return 1000.0 * median_seconds(fn, device, iters, warmup)


def read_face(path: Path, size: int) -> torch.Tensor:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr.shape[0] != size:
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> (H, W, 3) uint8, as the pipeline rounds its output."""
    img = ((x.float().clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).cpu().numpy()
    return np.round(img * 255.0).astype(np.uint8)


def paper_vae(lora: bool):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_config(SD_VAE_FT_MSE)
    if lora:
        from peft import LoraConfig, inject_adapter_in_model

        s = LoraSettings(targets=PAPER_VAE_LORA_TARGETS, adapter="vae_skip")
        inject_adapter_in_model(LoraConfig(r=s.rank, lora_alpha=s.lora_alpha, target_modules=list(s.targets)),
                                vae, adapter_name=s.adapter)
    return vae


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared media folder")
    ap.add_argument("--taesd", type=Path, help="TAESD folder (default <shared>/models/taesd)")
    ap.add_argument("--sd-vae", type=Path, help="local sd-vae-ft-mse folder: also compare TAESD with the SD VAE "
                                                "on the same latents")
    ap.add_argument("--size", type=int, default=512, help="face side in pixels (default 512, the paper's)")
    ap.add_argument("--faces", type=int, default=0, help="use only the first N demo faces (default all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--iters", type=int, default=5, help="timed TAESD decodes (median)")
    ap.add_argument("--vae-iters", type=int, default=3, help="timed SD VAE decodes (median; slow on CPU)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default torch's)")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its note on casting with .to() is not about us
    if args.size % 8:
        raise SystemExit(f"--size must be a multiple of 8, got {args.size}")

    taesd = load_taesd(args.taesd or args.shared / "models" / "taesd", encoder=True).to(device, dtype)
    sd_vae = None
    if args.sd_vae is not None:
        from diffusers import AutoencoderKL

        sd_vae = AutoencoderKL.from_pretrained(str(args.sd_vae)).eval().requires_grad_(False).to(device, dtype)
    scale = float(SD_VAE_FT_MSE["scaling_factor"])

    faces = sorted((args.shared / "data" / "instantrestore").glob("*/gt.png"))
    if args.faces:
        faces = faces[: args.faces]
    if not faces:
        raise SystemExit(f"no demo faces under {args.shared}/data/instantrestore/*/gt.png")
    rows = []
    with torch.inference_mode():
        for path in faces:
            x = read_face(path, args.size).to(device, dtype)
            gt = to_uint8(x * 2 - 1)
            row = {"face": path.parent.name}
            rt = to_uint8(taesd.decoder(taesd.encoder(x * 2 - 1)))
            row["taesd_roundtrip_psnr"], row["taesd_roundtrip_ssim"] = psnr(rt, gt), ssim(rt, gt)
            if sd_vae is not None:
                z = sd_vae.encode(x * 2 - 1).latent_dist.mean * scale
                by_vae = to_uint8(sd_vae.decode(z / scale).sample)
                by_taesd = to_uint8(taesd.decoder(z))  # TAESD reads the scaled latents directly
                row["vae_psnr"], row["vae_ssim"] = psnr(by_vae, gt), ssim(by_vae, gt)
                row["taesd_on_vae_latent_psnr"], row["taesd_on_vae_latent_ssim"] = psnr(by_taesd, gt), ssim(by_taesd, gt)
                row["taesd_vs_vae_psnr"], row["taesd_vs_vae_ssim"] = psnr(by_taesd, by_vae), ssim(by_taesd, by_vae)
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    keys = [k for k in rows[0] if k != "face"]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    print(f"\n{len(rows)} faces at {args.size} px, {args.dtype} on {device}: mean " +
          ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    if sd_vae is None:
        print("(no --sd-vae: TAESD vs the SD VAE on the same latents was not measured)")

    timing = {}
    if not args.no_timing:
        lat = args.size // 8
        z = torch.randn(1, 4, lat, lat, generator=torch.Generator().manual_seed(0)).to(device, dtype)
        with torch.inference_mode():
            timing["taesd_decode_ms"] = timed_ms(lambda: taesd.decoder(z), device, args.iters, args.warmup)
            print(f"decode 1 x {args.size} px: TAESD {timing['taesd_decode_ms']:.1f} ms", flush=True)
            for lora in (False, True):
                vae = paper_vae(lora).eval().requires_grad_(False).to(device, dtype)
                key = "vae_lora_decode_ms" if lora else "vae_decode_ms"
                timing[key] = timed_ms(lambda: vae.decode(z / scale).sample, device, args.vae_iters,
                                       min(args.warmup, 1))
                print(f"decode 1 x {args.size} px: SD VAE{' + LoRA (unmerged)' if lora else ''} "
                      f"{timing[key]:.1f} ms ({timing[key] / timing['taesd_decode_ms']:.1f}x TAESD)", flush=True)
                del vae
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "device": str(device), "dtype": args.dtype,
                                         "threads": torch.get_num_threads(), "mean": mean, "faces": rows,
                                         "timing": timing}, indent=2) + "\n")


if __name__ == "__main__":
    main()
