"""torch.export of the per-frame core (latent + reference K/V in, latent out) on a tiny config."""
import pytest
import torch

from streamrestore.model import InstantRestoreNet, InstantRestorer, RestorerCore, tiny_config

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

    exported, args, kwargs = restorer.export_core(faces, caches)
    assert (kwargs["ref_mask"] is not None) == padded
    _, _, input_all = restorer.core_inputs(faces, caches)
    with torch.no_grad():
        eager = RestorerCore(restorer.net, input_mask_all=input_all)(*args, **kwargs)
        got = exported.module()(*args, **kwargs)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)
    # the core is the restore path: decoding it gives what restore() returns
    with torch.no_grad():
        full = restorer.restore(faces, caches)
    torch.testing.assert_close(restorer.net.decode(got), full, rtol=1e-5, atol=1e-5)
