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
