"""Parity of our InstantRestoreNet with the official InstantRestore code, random weights.

Two steps, two environments (the official code needs diffusers 0.24; we need >= 0.30):

``generate`` (run with the official code's environment) builds the official ``Pix2Pix_Turbo``
with random weights and writes its inputs, intermediate tensors and outputs to an ``.npz``::

    git clone https://github.com/snap-research/InstantRestore runs/oracle/InstantRestore   # commit 735217a
    python -m venv --system-site-packages runs/oracle/venv
    runs/oracle/venv/bin/pip install diffusers==0.24.0 peft==0.10.0 transformers==4.37.2 \\
        huggingface_hub==0.20.3 "tokenizers<0.19" pyrallis
    OMP_NUM_THREADS=1 runs/oracle/venv/bin/python tools/official_parity.py generate \\
        --official runs/oracle/InstantRestore --size reduced --out tests/fixtures/official_parity.npz
    OMP_NUM_THREADS=1 runs/oracle/venv/bin/python tools/official_parity.py generate \\
        --official runs/oracle/InstantRestore --size sd --resolution 128 --variants final \\
        --out runs/oracle/parity_sd128.npz

``compare`` (run with this package) rebuilds the same network with our code and prints the max
abs difference per compared tensor::

    OMP_NUM_THREADS=1 python tools/official_parity.py compare runs/oracle/parity_sd128.npz

The official code is imported from the given folder at run time and never copied here. It is
run as released except for these patches, all made in this process (see docs/parity.md):
``cuda`` -> ``cpu``; the hard-coded ``reshape(-1, 3, 512, 512)`` of the references follows
the input size; ``from_pretrained`` builds each network from its config with
:mod:`streamrestore.model.random_weights` (no download); the VAE latent *sample* is replaced by
its mean and ``torch.randn_like`` returns our fixed noises (the release draws both at random).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: the reduced network of the CI fixture: the paper's structure (shared attention in two up
#: blocks, two heads, FreeU on up blocks 0/1, VAE + LoRA), 32 px faces, 8x8 latents
REDUCED_UNET = {
    "sample_size": 8,
    "block_out_channels": [16, 32, 32],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "cross_attention_dim": 16,
    "attention_head_dim": 2,
    "norm_num_groups": 8,
    "use_linear_projection": True,
    "in_channels": 4,
    "out_channels": 4,
}
REDUCED_VAE = {
    "block_out_channels": [8, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 32,
    "scaling_factor": 0.18215,
}
#: ``stabilityai/sd-turbo`` scheduler/scheduler_config.json, the fields DDPMScheduler reads
SD_TURBO_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "steps_offset": 1, "timestep_spacing": "trailing", "trained_betas": None,
}
#: released variants and their AdaIN flag (the landmark loss only changes training)
VARIANT_ADAIN = {"final": True, "adain": True, "lmattn": False, "base": False}
WEIGHT_SEED = 15
NOISE_SEED = 0  # RestorerConfig.noise_seed
REFERENCE_NOISE_SEED = 1234  # RestorerConfig.reference_noise_seed
NUM_REFERENCES = 4
FACE_ID = "00082"  # shared/data/instantrestore/<id>: degraded.png + conditioning/*.png


def _load_by_path(name: str, path: Path):
    """Import one of our modules by file (no package import: it must also work with diffusers 0.24)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def reference_noises(c: int, s: int, seed: int, n: int):
    """Reference i's fixed noise: seed + i (``RestorerConfig.reference_noise = "per_reference"``)."""
    import torch

    return torch.cat([torch.randn(1, c, s, s, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)])


def role_of(variant: str):
    """Which random-weight set each tensor of a restoration network (LoRA-wrapped) gets."""
    def pick(name: str):
        if "lora_" in name:
            return f"lora:{variant}"
        if name.startswith("conv_in."):
            return f"trained:{variant}"  # the method trains conv_in in full
        return "base"
    return pick


def load_faces(shared: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The degraded face and 4 references (uint8 RGB, resolution²) of one demo identity."""
    from PIL import Image

    folder = shared / "data" / "instantrestore" / FACE_ID
    refs = sorted((folder / "conditioning").glob("*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
    paths = [folder / "degraded.png", *refs[:NUM_REFERENCES]]
    images = [np.asarray(Image.open(p).convert("RGB").resize((resolution, resolution), Image.LANCZOS)) for p in paths]
    return images[0], np.stack(images[1:])


# -- generate: the official code ---------------------------------------------------------------
def _patched_module(modname: str, path: Path, replacements: list[tuple[str, str]]):
    src = path.read_text()
    for old, new in replacements:
        if old not in src:
            raise SystemExit(f"{path}: expected text {old!r} not found; the official code changed")
        src = src.replace(old, new)
    mod = types.ModuleType(modname)
    mod.__file__ = str(path)
    sys.modules[modname] = mod
    exec(compile(src, str(path), "exec"), mod.__dict__)
    return mod


class _FixedTokenizer:
    """Stands in for SD-Turbo's CLIP tokenizer (no download): fixed ids of the tokenizer's length."""

    def __init__(self, length: int):
        self.model_max_length = length

    def __call__(self, text, max_length, padding, truncation, return_tensors):
        import torch

        ids = torch.full((1, max_length), 2, dtype=torch.long)
        ids[0, : min(12, max_length)] = torch.arange(3, 3 + min(12, max_length))
        return types.SimpleNamespace(input_ids=ids)


def generate(args) -> None:
    import torch

    torch.set_grad_enabled(False)
    rw = _load_by_path("_sr_random_weights", ROOT / "streamrestore" / "model" / "random_weights.py")
    cfgmod = _load_by_path("_sr_config", ROOT / "streamrestore" / "model" / "config.py")
    official = Path(args.official).resolve()
    sys.path.insert(0, str(official))
    if args.size == "reduced":
        unet_cfg, vae_cfg, rank, resolution = REDUCED_UNET, REDUCED_VAE, 4, args.resolution or 32
        te_layers = 1
    else:
        unet_cfg, vae_cfg, rank, resolution = cfgmod.SD_TURBO_UNET, cfgmod.SD_VAE_FT_MSE, 32, args.resolution or 128
        te_layers = 1
    prompt_tokens, prompt_dim = 77, unet_cfg["cross_attention_dim"]

    import transformers
    from diffusers import AutoencoderKL, DDPMScheduler
    from diffusers.models import vae as diffusers_vae

    models = official / "face_replace" / "models"
    _patched_module("face_replace.models.model", models / "model.py",
                    [('device="cuda"', 'device="cpu"'), (".cuda()", "")])
    p2p = _patched_module("face_replace.models.pix2pix_turbo", models / "pix2pix_turbo.py",
                          [(".cuda()", ""), ('"cuda"', '"cpu"'),
                           ("reshape(-1, 3, 512, 512)", "reshape(-1, *conditioning_images.shape[-3:])")])
    import pyrallis
    from face_replace.configs.train_config import ModelConfig, TrainConfig
    from face_replace.models.unet_2d_condition.unet import UNet2DConditionModel as OfficialUNet

    def unet_from_pretrained(cls, *a, **k):
        m = OfficialUNet.from_config(unet_cfg)
        rw.fill_module(m, WEIGHT_SEED)
        return m

    def vae_from_pretrained(cls, *a, **k):
        m = AutoencoderKL.from_config(vae_cfg)
        rw.fill_module(m, WEIGHT_SEED)
        return m

    def text_from_pretrained(cls, *a, **k):
        c = transformers.CLIPTextConfig(vocab_size=64, hidden_size=prompt_dim, intermediate_size=2 * prompt_dim,
                                        num_hidden_layers=te_layers, num_attention_heads=2,
                                        max_position_embeddings=prompt_tokens, projection_dim=prompt_dim)
        m = transformers.CLIPTextModel(c)
        rw.fill_module(m, WEIGHT_SEED, role_of=lambda n: "text")
        return m

    OfficialUNet.from_pretrained = classmethod(unet_from_pretrained)
    AutoencoderKL.from_pretrained = classmethod(vae_from_pretrained)
    transformers.CLIPTextModel.from_pretrained = classmethod(text_from_pretrained)
    transformers.AutoTokenizer.from_pretrained = classmethod(lambda cls, *a, **k: _FixedTokenizer(prompt_tokens))
    DDPMScheduler.from_pretrained = classmethod(lambda cls, *a, **k: DDPMScheduler.from_config(SD_TURBO_SCHEDULER))

    # the release samples the latent distribution: take its mean (what we use), recording each call
    latents_seen = []

    def mean_not_sample(self, generator=None):
        latents_seen.append(self.mean.clone())
        return self.mean
    diffusers_vae.DiagonalGaussianDistribution.sample = mean_not_sample

    degraded, refs = load_faces(Path(args.shared), resolution)
    to_official = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)  # ToTensor+Normalize
    c_t = to_official(degraded[None])
    conds = to_official(refs)[None]  # (1, N, 3, R, R)
    s = resolution // 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    c = vae_cfg["latent_channels"]
    noise = torch.randn(1, c, s, s, generator=torch.Generator().manual_seed(NOISE_SEED))
    ref_noise = reference_noises(c, s, REFERENCE_NOISE_SEED, NUM_REFERENCES)

    out: dict[str, np.ndarray] = {}
    meta = {"size": args.size, "resolution": resolution, "unet": unet_cfg, "vae": vae_cfg, "rank": rank,
            "weight_seed": WEIGHT_SEED, "noise_seed": NOISE_SEED, "reference_noise_seed": REFERENCE_NOISE_SEED,
            "face_id": FACE_ID, "variants": list(args.variants), "official_commit": args.commit,
            "packages": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
                         "peft": __import__("peft").__version__, "transformers": transformers.__version__}}
    out["degraded"], out["references"] = degraded, refs
    for variant in args.variants:
        cfg = ModelConfig(lora_rank_unet=rank, lora_rank_vae=rank, use_adain=VARIANT_ADAIN[variant], train_input=False,
                          use_shortcuts=False, train_vae=True, use_shared_attention=True)
        net = p2p.Pix2Pix_Turbo(lora_rank_unet=rank, lora_rank_vae=rank, cfg=cfg)
        rw.fill_module(net.unet, WEIGHT_SEED, role_of(variant))
        rw.fill_module(net.vae, WEIGHT_SEED, role_of(variant))
        net.set_eval()
        net.noise_timesteps = [249]  # test.py does the same
        seen: dict = {}
        net.unet.register_forward_pre_hook(lambda m, a: seen.__setitem__("x_t", a[0].clone()))
        net.unet.register_forward_hook(lambda m, a, o: seen.__setitem__("eps", o.sample.clone()))
        net.original_unet.register_forward_pre_hook(lambda m, a: seen.__setitem__("ref_x_t", a[0].clone()))
        get_kv = net.get_conditioning_keys_values

        def capture_kv(*a, **k):
            keys, values, images = get_kv(*a, **k)
            seen["keys"], seen["values"] = [t.clone() for t in keys], [t.clone() for t in values]
            return keys, values, images
        net.get_conditioning_keys_values = capture_kv
        step = net.sched.step

        def capture_step(*a, **k):
            res = step(*a, **k)
            seen.setdefault("x0s", []).append(res.pred_original_sample.clone())
            return res
        net.sched.step = capture_step

        def run(valid: int):
            queue = [ref_noise, noise]  # forward draws the references' noise first, then the input's
            real_randn_like = torch.randn_like

            def fixed_randn_like(t, *a, **k):
                n = queue.pop(0)
                if tuple(n.shape) != tuple(t.shape):
                    raise RuntimeError(f"noise shape {tuple(n.shape)} != {tuple(t.shape)}")
                return n.clone()
            torch.randn_like = fixed_randn_like
            latents_seen.clear()
            seen.clear()
            try:
                img, _, _ = net(c_t, conditioning_images=conds, valid_indices=torch.tensor([valid]))  # noqa: F821 (the loop's net; deleted after use)
            finally:
                torch.randn_like = real_randn_like
            return img

        img = run(NUM_REFERENCES)
        sf = vae_cfg["scaling_factor"]
        if "prompt" not in out:
            out["prompt"] = net.caption_enc.numpy()
            out["latent_refs"] = (latents_seen[1] * sf).numpy()
            out["ref_x_t"] = seen["ref_x_t"].numpy()
            for i, (k, v) in enumerate(zip(seen["keys"], seen["values"])):
                out[f"ref_k{i}"], out[f"ref_v{i}"] = k[0].numpy(), v[0].numpy()
            meta["num_layers"] = len(seen["keys"])
            meta["coach_cfg"] = pyrallis.encode(TrainConfig(model=cfg))
        out[f"{variant}/latent"] = (latents_seen[0] * sf).numpy()
        out[f"{variant}/x_t"] = seen["x_t"].numpy()
        out[f"{variant}/eps"] = seen["eps"].numpy()
        out[f"{variant}/x0"] = seen["x0s"][-1].numpy()
        out[f"{variant}/image"] = img.numpy()  # [-1, 1]
        if variant == args.variants[0] and not args.skip_layouts:
            # the official save path (Pix2Pix_Turbo.save_model: LoRA + conv_in, official keys); the
            # fixture keeps its layout and the test rebuilds the same file from it (random_weights)
            ckpt_path = Path(args.checkpoint_out or ROOT / "runs" / "oracle" / f"{Path(args.out).stem}.save_model.pt")
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            net.save_model(ckpt_path)
            saved = torch.load(ckpt_path, map_location="cpu")
            layout = {k: (v if not isinstance(v, dict) else {n: list(t.shape) for n, t in v.items()})
                      for k, v in saved.items()}
            _check_rebuild(rebuild_save_model(layout, variant, WEIGHT_SEED), saved, "save_model")
            # the training checkpoint (coach.get_save_dict) that test.py and gradio_demo.py load:
            # {"state_dict": FaceReplaceModel.state_dict() (keys "net.<...>"), "cfg": TrainConfig}
            coach = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "cfg": meta["coach_cfg"]}
            coach_layout = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in coach["state_dict"].items()}
            _check_rebuild(rebuild_coach(coach_layout, meta["coach_cfg"], variant, WEIGHT_SEED), coach, "coach")
            meta["save_model_layout"], meta["coach_layout"], meta["layout_variant"] = layout, coach_layout, variant
        if variant == args.variants[0]:
            # two real references in four slots: the release zeroes the other two's K/V
            out[f"{variant}/image_valid2"] = run(2).numpy()
        del net
    out["meta"] = np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **{k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in out.items()})
    print(f"wrote {args.out}")


# -- the two official checkpoint layouts, rebuilt from their recorded key lists ----------------------
def _random(name: str, shape, seed: int, role: str):

    from_path = sys.modules.get("_sr_random_weights")
    if from_path is None:
        from_path = _load_by_path("_sr_random_weights", ROOT / "streamrestore" / "model" / "random_weights.py")
    return from_path.random_tensor(name, shape, seed, role)


def rebuild_save_model(layout: dict, variant: str, seed: int) -> dict:
    """The dict ``Pix2Pix_Turbo.save_model`` wrote, from its recorded layout (key -> shape)."""
    pick = role_of(variant)
    out = {k: v for k, v in layout.items() if not k.startswith("state_dict_")}
    for part in ("state_dict_unet", "state_dict_vae"):
        out[part] = {k: _random(k, shape, seed, pick(k)) for k, shape in layout[part].items()}
    return out


def rebuild_coach(layout: dict, cfg: dict, variant: str, seed: int) -> dict:
    """The training checkpoint ``{"state_dict", "cfg"}`` the official test.py loads, from its layout."""
    import torch

    pick = role_of(variant)
    state = {}
    for key, (shape, dtype) in layout.items():
        _, part, name = key.split(".", 2)
        if not dtype.startswith("float"):  # the text encoder's position ids
            state[key] = torch.arange(shape[-1], dtype=getattr(torch, dtype)).expand(*shape).clone()
            continue
        role = {"unet": pick(name), "vae": pick(name), "text_encoder": "text"}.get(part, "base")
        state[key] = _random(name, shape, seed, role)
    return {"state_dict": state, "cfg": cfg}


def _check_rebuild(rebuilt: dict, saved: dict, what: str) -> None:
    import torch

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}/")
            else:
                yield f"{prefix}{k}", v
    a, b = dict(flat(rebuilt)), dict(flat(saved))
    if a.keys() != b.keys():
        raise SystemExit(f"{what}: rebuilt keys differ: {sorted(a.keys() ^ b.keys())[:8]}")
    bad = [k for k in a if (not torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] != b[k])]
    if bad:
        raise SystemExit(f"{what}: rebuilt values differ from the official file at {bad[:8]}")


# -- compare: our code -------------------------------------------------------------------------
def read_fixture(path) -> tuple[dict, dict]:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    return arrays, meta


def build_ours(meta: dict, variant: str, **changes):
    """Our InstantRestoreNet with the oracle's configuration and random weights (fp32, CPU, eval)."""

    from streamrestore.model.config import PAPER_VAE_LORA_TARGETS, LoraSettings, RestorerConfig
    from streamrestore.model.random_weights import fill_module
    from streamrestore.model.restorer import InstantRestoreNet

    rank = meta["rank"]
    settings = dict(unet=meta["unet"], vae=meta["vae"], resolution=meta["resolution"],
                    unet_lora=LoraSettings(rank=rank), adain=VARIANT_ADAIN[variant],
                    vae_lora=LoraSettings(rank=rank, targets=PAPER_VAE_LORA_TARGETS, adapter="vae_skip"),
                    noise_seed=meta["noise_seed"], reference_noise_seed=meta["reference_noise_seed"],
                    reference_noise="per_reference")
    settings.update(changes)
    net = InstantRestoreNet(RestorerConfig(**settings))
    seed = meta["weight_seed"]
    fill_module(net.unet, seed, role_of(variant))
    fill_module(net.vae, seed, role_of(variant))
    fill_module(net.ref_unet.conv_in, seed, prefix="conv_in.")
    return net.eval().requires_grad_(False)


def ours(net, arrays: dict) -> dict:
    """Every compared tensor, computed by our code (shared-attention path, net-level calls)."""
    import torch

    from streamrestore.model.packing import pack_kv

    with torch.inference_mode():
        net.prompt_embeds.copy_(torch.from_numpy(arrays["prompt"]))
        faces = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
        degraded, refs = faces(arrays["degraded"][None]), faces(arrays["references"])
        c, s = net.config.latent_channels, net.config.latent_size
        noise = torch.randn(1, c, s, s, generator=torch.Generator().manual_seed(net.config.noise_seed))
        ref_noise = reference_noises(c, s, net.config.reference_noise_seed, refs.shape[0])
        res: dict = {}
        res["latent_refs"] = net.encode(refs, reference=True)
        res["ref_x_t"] = net._sqrt_a_ref * res["latent_refs"] + net._sqrt_1ma_ref * ref_noise
        kv = net.reference_kv(res["latent_refs"], ref_noise)
        for i, name in enumerate(net.shared_layers):
            res[f"ref_k{i}"], res[f"ref_v{i}"] = kv[name]
        packed = pack_kv(net, kv, torch.ones(1, refs.shape[0], dtype=torch.bool))
        latent = net.encode(degraded)
        res["latent"] = latent
        res["x_t"] = net._sqrt_a * latent + net._sqrt_1ma * noise
        t = torch.full((1,), net.config.timestep)
        res["eps"] = net.unet(res["x_t"], t, encoder_hidden_states=net.prompt_embeds,
                              cross_attention_kwargs={"shared_kv": packed}).sample
        res["x0"] = net.denoise(latent, noise, packed)
        res["image"] = net.decode(res["x0"]) * 2 - 1
    return res


def official(arrays: dict, variant: str) -> dict:
    """The oracle's tensors of ``variant`` under the names :func:`ours` uses."""
    import torch

    res = {k: torch.from_numpy(v) for k, v in arrays.items()
           if k in ("latent_refs", "ref_x_t") or k.startswith("ref_k") or k.startswith("ref_v")}
    for name in ("latent", "x_t", "eps", "x0", "image"):
        res[name] = torch.from_numpy(arrays[f"{variant}/{name}"])
    return res


def max_abs_diffs(mine: dict, theirs: dict) -> dict[str, float]:
    out = {}
    for k, v in theirs.items():
        a = mine[k].float()
        if tuple(a.shape) != tuple(v.shape):
            raise AssertionError(f"{k}: shape {tuple(a.shape)} vs official {tuple(v.shape)}")
        out[k] = float((a - v.float()).abs().max())
    return out


def compare(args) -> None:
    arrays, meta = read_fixture(args.fixture)
    print(f"{args.fixture}: size {meta['size']}, {meta['resolution']} px, official {meta.get('official_commit')}, "
          f"{meta['packages']}")
    for variant in meta["variants"]:
        net = build_ours(meta, variant)
        diffs = max_abs_diffs(ours(net, arrays), official(arrays, variant))
        worst = max(diffs, key=diffs.get)
        print(f"{variant}: worst {worst} {diffs[worst]:.2e}")
        for k, d in diffs.items():
            print(f"  {k:12s} {d:.2e}")
        del net


def effects(args) -> None:
    """Measured size of the randomness the release has and we fix, on the oracle's network."""
    import torch

    from streamrestore.model.packing import pack_kv

    arrays, meta = read_fixture(args.fixture)
    net = build_ours(meta, "final")
    base = ours(net, arrays)["image"]
    faces = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
    degraded, refs = faces(arrays["degraded"][None]), faces(arrays["references"])
    c, s = net.config.latent_channels, net.config.latent_size
    draw = lambda seed, n=1: torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed))

    def image(noise, ref_noise):
        with torch.inference_mode():
            kv = net.reference_kv(net.encode(refs, reference=True), ref_noise)
            packed = pack_kv(net, kv, torch.ones(1, refs.shape[0], dtype=torch.bool))
            return net.decode(net.denoise(net.encode(degraded), noise, packed)) * 2 - 1

    ref_fixed = reference_noises(c, s, meta["reference_noise_seed"], refs.shape[0])
    noise = draw(meta["noise_seed"])
    shared = image(noise, draw(meta["reference_noise_seed"]).expand(refs.shape[0], -1, -1, -1))
    redrawn = image(noise, draw(99, refs.shape[0]))  # other independent reference noises
    other = image(draw(7), ref_fixed)  # another draw of the input noise, as each released call makes
    print(f"check: our image vs the oracle's {(base - torch.from_numpy(arrays['final/image'])).abs().max():.2e}")
    for what, img in (("one noise shared by all references (reference_noise='shared')", shared),
                      ("another draw of the independent reference noises", redrawn)):
        print(f"{what}: image max abs {(img - base).abs().max():.2e}, mean abs {(img - base).abs().mean():.2e}"
              "  (range [-1, 1])")
    print(f"another input-noise draw: image max abs {(other - base).abs().max():.2e}, "
          f"mean abs {(other - base).abs().mean():.2e}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="run the official code (its own environment) and write the tensors")
    g.add_argument("--official", required=True, help="checkout of snap-research/InstantRestore")
    g.add_argument("--commit", default="735217a", help="the checkout's commit (recorded in the file)")
    g.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the shared data folder")
    g.add_argument("--size", choices=("reduced", "sd"), default="reduced")
    g.add_argument("--resolution", type=int, default=None)
    g.add_argument("--variants", nargs="+", default=list(VARIANT_ADAIN), choices=list(VARIANT_ADAIN))
    g.add_argument("--checkpoint-out", default=None, help="where the first variant's official save_model file goes "
                   "(default runs/oracle/<out>.save_model.pt; never into the repository)")
    g.add_argument("--skip-layouts", action="store_true",
                   help="do not record the checkpoint layouts (saves a full copy of the weights at paper scale)")
    g.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="rebuild with our code and print max abs differences")
    c.add_argument("fixture")
    e = sub.add_parser("effects", help="measure the release's randomness that we fix (noise per reference, noise draw)")
    e.add_argument("fixture")
    args = ap.parse_args(argv)
    {"generate": generate, "compare": compare, "effects": effects}[args.cmd](args)


if __name__ == "__main__":
    main()
