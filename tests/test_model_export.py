"""torch.export of the per-frame core (:class:`streamrestore.backends.FrameCore`: faces + noise +
packed reference K/V in, restored faces out) on a tiny config."""
import pytest
import torch
from model_utils import export_frame_core

from streamrestore.model import InstantRestoreNet, InstantRestorer, tiny_config

R = 32


@pytest.mark.parametrize("padded", [False, True])
def test_export_core_matches_eager(padded):
    torch.manual_seed(0)
    net = InstantRestoreNet(tiny_config())
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    restorer = InstantRestorer(net, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    faces = torch.rand(2, 3, R, R, generator=g)
    c2 = restorer.encode_references(torch.rand(2, 3, R, R, generator=g))
    caches = [c2, restorer.encode_references(torch.rand(1, 3, R, R, generator=g))] if padded else [c2, c2]

    exported, core, inputs, kwargs = export_frame_core(restorer, faces, caches, slots=2)
    ref_mask = inputs[6]
    assert bool(ref_mask.all()) != padded
    with torch.no_grad():
        eager = core(*inputs, **kwargs)
        got = exported.module()(*inputs, **kwargs)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)
    # the core is the restore path: it gives what restore() returns
    with torch.no_grad():
        full = restorer.restore(faces, caches)
    torch.testing.assert_close(got[:2], full, rtol=1e-5, atol=1e-5)
