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
