"""Helpers shared by the model tests."""
import torch


def randomise_lora(net, seed=0) -> torch.Generator:
    """peft starts LoRA at zero (identity); give it (and conv_in) weights so the LoRA path
    matters. Returns the generator, for callers that draw more from the same stream."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            if n.startswith("unet.conv_in."):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return g


def export_frame_core(restorer, faces, caches, slots: int = 4):
    """The exported per-frame core for these faces (what the TensorRT backend compiles), its
    eager twin, and its inputs (args, kwargs)."""
    from streamrestore.backends import BackendConfig, BackendRestorer, FrameCore

    backend = BackendRestorer(restorer, "compile", BackendConfig(reference_slots=slots))  # nothing compiles here
    key, args = backend.padded_inputs(faces, caches, [restorer.config.noise_seed] * faces.shape[0])
    _, _, with_refs, with_input = key
    core = FrameCore(backend.net, with_refs, with_input).eval()
    *inputs, input_mask, reference_faces = args
    kwargs = {name: t for name, t in (("input_mask", input_mask), ("reference_faces", reference_faces))
              if t is not None}
    with torch.no_grad():
        exported = torch.export.export(core, tuple(inputs), kwargs=kwargs)
    return exported, core, inputs, kwargs


def random_faces(b: int, side: int, seed: int = 2) -> torch.Tensor:
    """B reproducible random faces (B, 3, side, side) in [0, 1]."""
    return torch.rand(b, 3, side, side, generator=torch.Generator().manual_seed(seed))


def randomise(module, seed: int = 0) -> None:
    """Small random weights everywhere (a fresh detail head is the identity; this one is not)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def headed_restorer(head, name: str = "headed"):
    """A tiny pixel restorer with the detail head ``head`` (settings), random head weights and a
    UNet that changes the face, so the head sees something to refine."""
    from streamrestore.model import InstantRestoreNet, InstantRestorer, tiny_config

    torch.manual_seed(0)
    net = InstantRestoreNet(tiny_config("pixel", detail_head=head))
    randomise(net.detail_head)
    with torch.no_grad():
        net.unet.conv_out.weight.normal_(0, 0.02)
    return InstantRestorer(net, device="cpu", dtype=torch.float32, name=name)
