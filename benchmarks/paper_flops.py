"""FLOPs of the paper-scale restorer per stage, counted on the meta device (nothing is computed).

    python benchmarks/paper_flops.py [--resolution 512] [--refs 4]

Stages: VAE encode of one face, the reference pass of one reference (VAE encode + reference UNet
at t=1), the restoration UNet of one face (with its references' K/V in the shared layers) and
the VAE decode. With cached references a face costs encode + UNet + decode; recomputing its
references every frame adds ``refs`` reference passes. These counts are what docs/parity.md and
the README project GPU times from (FLOPs = 2 x multiply-adds, torch.utils.flop_counter).
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from streamrestore.model import InstantRestoreNet, paper_config
from streamrestore.model.packing import pack_kv


def count(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def stage_flops(resolution: int = 512, refs: int = 4) -> dict[str, float]:
    """FLOPs per stage (one face / one reference) of the paper network at ``resolution``."""
    # built on the CPU (the reference network's tying checks real tensors), then moved to meta
    net = InstantRestoreNet(paper_config(resolution=resolution)).eval().to("meta")
    s, c = net.config.latent_size, net.config.latent_channels
    face = torch.zeros(1, 3, resolution, resolution, device="meta")
    latent = torch.zeros(1, c, s, s, device="meta")
    noise = torch.zeros(1, c, s, s, device="meta")
    out: dict[str, float] = {}
    with torch.no_grad():
        out["vae_encode"] = count(lambda: net.encode(face))
        out["reference_unet"] = count(lambda: net.reference_kv(latent, noise))
        kv = net.reference_kv(latent.expand(refs, -1, -1, -1), noise.expand(refs, -1, -1, -1))
        packed = pack_kv(net, kv, torch.ones(1, refs, dtype=torch.bool))
        out["unet"] = count(lambda: net.denoise(latent, noise, packed))
        out["vae_decode"] = count(lambda: net.decode(latent))
    out["face_cached"] = out["vae_encode"] + out["unet"] + out["vae_decode"]
    out["per_reference"] = out["vae_encode"] + out["reference_unet"]
    out["face_recomputed"] = out["face_cached"] + refs * out["per_reference"]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--refs", type=int, default=4)
    args = ap.parse_args(argv)
    flops = stage_flops(args.resolution, args.refs)
    print(f"| stage ({args.resolution} px, {args.refs} refs) | GFLOPs |")
    print("|---|---|")
    for k, v in flops.items():
        print(f"| {k} | {v / 1e9:.0f} |")


if __name__ == "__main__":
    main()
