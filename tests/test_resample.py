"""A restorer run on crops larger than its own (``streamrestore.model.resample``) and the
pipeline's ``crop_resolution``."""
import numpy as np
import pytest
import torch

from streamrestore.model.identity import IdentityRestorer
from streamrestore.model.resample import ResampledRestorer, at_crop_resolution
from streamrestore.pipeline import FaceRestorer, PipelineConfig
from streamrestore.quality import QualityGateConfig
from streamrestore.temporal import TemporalConfig


class _Brighten(IdentityRestorer):
    """Adds 0.1 to every pixel of its faces and records the sizes it was given."""

    name = "brighten"

    def __init__(self, resolution=128):
        super().__init__(resolution)
        self.sizes = []

    def encode_references(self, faces):
        self.sizes.append(("refs", tuple(faces.shape[-2:])))
        return super().encode_references(faces)

    def restore(self, faces, caches, noise_seeds=None):
        self.sizes.append(("faces", tuple(faces.shape[-2:])))
        return (faces + 0.1).clamp(0, 1)


def test_the_model_sees_its_own_size_and_its_change_is_enlarged_onto_the_crop():
    inner = _Brighten(128)
    outer = ResampledRestorer(inner, 256)
    assert outer.resolution == 256 and outer.name == "brighten"  # other attributes are the model's
    faces = torch.rand(2, 3, 256, 256) * 0.8
    out = outer.restore(faces, [None, None])
    assert out.shape == faces.shape
    assert torch.allclose(out, faces + 0.1, atol=1e-5)  # the change, enlarged: the crop's own detail stays
    outer.encode_references(torch.rand(3, 3, 256, 256))
    assert inner.sizes == [("faces", (128, 128)), ("refs", (128, 128))]
    # a model that changes nothing gives the large crop back exactly
    same = ResampledRestorer(IdentityRestorer(128), 256).restore(faces, [None, None])
    assert torch.equal(same, faces)


def test_crop_resolution_wraps_only_when_larger():
    model = IdentityRestorer(128)
    assert at_crop_resolution(model, None) is model
    assert at_crop_resolution(model, 128) is model and at_crop_resolution(model, 64) is model
    wrapped = at_crop_resolution(model, 256)
    assert isinstance(wrapped, ResampledRestorer) and at_crop_resolution(wrapped, 256) is wrapped
    with pytest.raises(ValueError, match="larger"):
        ResampledRestorer(model, 128)
    for bad in (16, 200.5):
        with pytest.raises(ValueError, match="crop_resolution"):
            PipelineConfig(crop_resolution=bad)


def test_the_pipeline_cuts_larger_crops_and_resizes_loaded_references():
    import synthetic_faces as sf

    from streamrestore.faces.identity import ReferenceSet

    frame = sf.face_frames(1, 320, 240, person="ann")[0][0]
    crops = np.stack([sf.aligned_face("ann", 128, variant=v) for v in range(2)])
    people = [ReferenceSet("ann", crops, np.ones((2, 4), np.float32) / 2, ["a", "b"])]
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False),
                            crop_resolution=256)
    inner = _Brighten(128)
    fr = FaceRestorer(inner, sf.SyntheticFaceDetector(), people, config=config)
    assert fr.resolution == 256 and fr.reference_sets[0].crops.shape[1:] == (256, 256, 3)
    with torch.inference_mode():
        out = fr.process(frame.copy())
    assert fr.last_faces[0].pixels.shape == (256, 256, 3)
    assert ("faces", (128, 128)) in inner.sizes and ("refs", (128, 128)) in inner.sizes
    assert out.astype(int).sum() > frame.astype(int).sum()  # the face was brightened
    # a model that changes nothing leaves a face larger than the crop as it was (only a change is
    # pasted on those; a face smaller than the crop goes through a resampling round trip)
    large = sf.face_frames(1, 1280, 960, person="ann", size=0.4)[0][0]
    plain = FaceRestorer(IdentityRestorer(128), sf.SyntheticFaceDetector(), config=config)
    assert np.array_equal(plain.process(large.copy()), large)
    assert plain.last_faces[0].pixels.shape == (256, 256, 3)


def test_crop_resolution_option():
    from streamrestore.cli import build_parser
    from streamrestore.cli.options import pipeline_config
    from streamrestore.errors import UserError

    parse = lambda *extra: pipeline_config(build_parser().parse_args(["in.mp4", *extra])).crop_resolution  # noqa: E731
    assert parse() is None
    assert parse("--crop-resolution", "256") == 256
    with pytest.raises(UserError, match="--crop-resolution"):
        parse("--crop-resolution", "8")
