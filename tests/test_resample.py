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
    """Adds 0.1 to every pixel of its faces and records the sizes it was given (and the last
    references it encoded)."""

    name = "brighten"

    def __init__(self, resolution=128):
        super().__init__(resolution)
        self.sizes = []
        self.batches = []

    def encode_references(self, faces):
        self.sizes.append(("refs", tuple(faces.shape[-2:])))
        self.encoded = faces.clone()
        return super().encode_references(faces)

    def restore(self, faces, caches, noise_seeds=None):
        self.sizes.append(("faces", tuple(faces.shape[-2:])))
        self.batches.append(len(faces))
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


def test_batches_of_several_sides_restore_in_one_call_as_each_alone():
    from streamrestore.model.resample import restore_batches

    class Seeded(IdentityRestorer):
        calls = 0

        def restore(self, faces, caches, noise_seeds=None):
            Seeded.calls += 1
            noise = torch.stack([torch.rand(faces.shape[1:], generator=torch.Generator().manual_seed(s))
                                 for s in noise_seeds])
            return (faces + 0.2 * noise - 0.1).clamp(0, 1)

    model = Seeded(128)
    batches = [torch.rand(1, 3, 128, 128), torch.rand(2, 3, 256, 256), torch.rand(1, 3, 512, 512)]
    together = restore_batches(model, batches, [None] * 4, noise_seeds=[1, 2, 3, 4])
    assert Seeded.calls == 1
    alone = [restore_batches(model, [batches[0]], [None], [1])[0], ResampledRestorer(model, 256).restore(batches[1], [None] * 2, [2, 3]),
             ResampledRestorer(model, 512).restore(batches[2], [None], [4])]
    for a, b in zip(together, alone):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)


def test_the_change_is_enlarged_bicubic_as_pytorch_does():
    """The CPU path (OpenCV) gives PyTorch's bicubic enlargement of the model's change."""
    import torch.nn.functional as F

    class Noise(IdentityRestorer):
        def restore(self, faces, caches, noise_seeds=None):
            return (faces + 0.2 * torch.rand(faces.shape, generator=torch.Generator().manual_seed(3)) - 0.1).clamp(0, 1)

    faces = 0.3 + 0.4 * torch.rand(2, 3, 512, 512)
    for side in (256, 512):
        crops = faces[..., :side, :side].contiguous()
        out = ResampledRestorer(Noise(128), side).restore(crops, [None, None])
        small = F.interpolate(crops, size=(128, 128), mode="area")
        change = Noise(128).restore(small, [None, None]) - small
        expected = (crops + F.interpolate(change, size=(side, side), mode="bicubic", align_corners=False)).clamp(0, 1)
        assert out.shape == crops.shape and torch.allclose(out, expected, atol=1e-5)
        assert not torch.allclose(out, crops, atol=1e-2)  # the change is there


def test_crop_resolution_wraps_only_when_larger():
    model = IdentityRestorer(128)
    assert at_crop_resolution(model, None) is model
    assert at_crop_resolution(model, 128) is model and at_crop_resolution(model, 64) is model
    wrapped = at_crop_resolution(model, 256)
    assert isinstance(wrapped, ResampledRestorer) and at_crop_resolution(wrapped, 256) is wrapped
    with pytest.raises(ValueError, match="larger"):
        ResampledRestorer(model, 128)
    for bad in (16, 200.5, "large", True):
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
    assert fr.resolution == 256 and fr.reference_sets[0] is people[0]  # kept as given
    assert fr._prepared["ann", 256].detail[0].shape == (256, 256, 3)  # the detail stage's, at its side
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


def test_crop_resolution_option(caplog):
    from streamrestore.cli import build_parser
    from streamrestore.cli.options import pipeline_config
    from streamrestore.errors import UserError

    parse = lambda *extra: pipeline_config(build_parser().parse_args(["in.mp4", *extra])).crop_resolution  # noqa: E731
    assert parse() == "auto" == PipelineConfig().crop_resolution
    assert parse("--crop-resolution", "256") == 256
    assert parse("--crop-resolution", "auto") == "auto"
    with pytest.raises(UserError, match="--crop-resolution takes 'auto' or a side of at least 32 pixels, got 8"):
        parse("--crop-resolution", "8")
    with pytest.raises(SystemExit):  # argparse: neither a number nor "auto"
        parse("--crop-resolution", "big")
    with caplog.at_level("WARNING", logger="streamrestore"):
        assert parse("--crop-resolution", "1024") == 1024 and not caplog.records
        assert parse("--crop-resolution", "5000") == 5000  # allowed, but said to be costly
    assert "--crop-resolution 5000: every stage's work" in caplog.text


def test_auto_crop_sides_follow_the_face_size_with_hysteresis():
    from streamrestore.model.resample import AUTO_MIN_FRAME_PIXELS, auto_crop_side, crop_sides

    assert crop_sides(128, None) == (128,) and crop_sides(128, 256) == (256,) and crop_sides(128, 64) == (128,)
    sides = crop_sides(128, "auto")
    assert sides == (128, 256, 512)
    assert crop_sides(256, "auto") == (256, 512) and crop_sides(512, "auto") == (512,)  # up to 512
    k = AUTO_MIN_FRAME_PIXELS
    # a 256-px face (Andrew Ng's in a 256-px clip) stays at the model's side; 2.9 and 5.8 frame
    # pixels per 128-px crop pixel (tpsmm, d13) get 256 and 512
    assert auto_crop_side(256, sides) == 128
    assert auto_crop_side(2.9 * 128, sides) == 256 and auto_crop_side(5.8 * 128, sides) == 512
    assert auto_crop_side(10_000, sides) == 512 and auto_crop_side(10, sides) == 128
    # a track near a threshold keeps its side until it is 15 % past it
    assert auto_crop_side(k * 256 * 1.05, sides, current=128) == 128
    assert auto_crop_side(k * 256 * 1.2, sides, current=128) == 256
    assert auto_crop_side(k * 256 * 0.95, sides, current=256) == 256
    assert auto_crop_side(k * 256 * 0.8, sides, current=256) == 128
    assert auto_crop_side(k * 256 * 0.95, sides) == 128  # a new track: the plain threshold


def test_auto_crop_resolution_cuts_each_face_at_its_own_side():
    """Two faces of different sizes in one frame: each is cut, gated and pasted at its own side,
    and both restored in one call of the model; a model that changes nothing leaves the frame as
    it was."""
    import synthetic_faces as sf

    from streamrestore.faces.identity import ReferenceSet
    from streamrestore.quality import IdentityGateConfig
    from streamrestore.reference_detail import ReferenceDetailConfig

    small = sf.face_frames(1, 320, 240, person="ann")[0][0]
    large = sf.face_frames(1, 1280, 960, person="ann", size=0.4)[0][0]
    frame = np.zeros((960, 1600, 3), np.uint8)
    frame[:, :1280] = large
    frame[:240, 1280:] = small
    crops = np.stack([sf.aligned_face("ann", 512, variant=v) for v in range(2)])
    people = [ReferenceSet("ann", crops, np.ones((2, 4), np.float32) / 2, ["a", "b"])]
    config = PipelineConfig(lookahead=0, temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False),
                            identity_gate=IdentityGateConfig(enabled=False), reference_detail=ReferenceDetailConfig.off())
    assert config.crop_resolution == "auto"
    inner = _Brighten(128)
    fr = FaceRestorer(inner, sf.SyntheticFaceDetector(), people, config=config)
    assert fr.crop_sides == (128, 256, 512) and fr.resolution == 512
    with torch.inference_mode():
        out = fr.process(frame.copy())
    sizes = sorted(f.pixels.shape[0] for f in fr.last_faces)
    assert len(sizes) == 2 and sizes[0] == 128 and sizes[1] > 128
    assert [s for s in inner.sizes if s[0] == "faces"] == [("faces", (128, 128))]  # both sides in one call
    assert inner.batches == [2]
    assert ("refs", (128, 128)) in inner.sizes  # encoded once, at the model's side
    assert out[:240, 1280:].astype(int).sum() > small.astype(int).sum()
    assert out[:, :1280].astype(int).sum() > large.astype(int).sum()
    plain = FaceRestorer(IdentityRestorer(128), sf.SyntheticFaceDetector(), config=config)
    assert np.array_equal(plain.process(large.copy()), large)
    assert plain.last_faces[0].pixels.shape[0] > 128


def test_a_growing_face_changes_crop_side_mid_track():
    """A face that grows (a zoom) moves up a crop side within its track; the stages that keep
    per-track state at the old side (fusion, gates) start over at the new one, no error."""
    import synthetic_faces as sf

    fr = FaceRestorer(_Brighten(128), sf.SyntheticFaceDetector(),
                      config=PipelineConfig(lookahead=0, gate=QualityGateConfig(enabled=False)))
    seen = []
    for size in np.linspace(0.05, 0.45, 12):
        frame = sf.face_frames(1, 640, 480, person="ann", size=float(size))[0][0]
        with torch.inference_mode():
            out = fr.process(frame.copy())
        assert out.shape == frame.shape and not np.array_equal(out, frame)
        (face,) = fr.last_faces
        seen.append((face.track_id, face.pixels.shape[0]))
    assert len({tid for tid, _ in seen}) == 1  # one track all along
    sides = [side for _, side in seen]
    assert sides[0] == 128 and sides[-1] == 512 and 256 in sides and sides == sorted(sides)


def test_references_aligned_at_each_side_are_used_at_it():
    """References loaded at every crop side: the model's own side (the K/V) is taken as
    aligned from the photos, not shrunk from the largest."""
    import synthetic_faces as sf

    from streamrestore.faces.identity import ReferenceSet

    large = np.stack([sf.aligned_face("ann", 512, variant=v) for v in range(2)])
    at_128 = np.full((2, 128, 128, 3), 7, np.uint8)  # told apart from a shrunk copy of ``large``
    ref = ReferenceSet("ann", large, np.ones((2, 4), np.float32) / 2, ["a", "b"],
                       crops_at={128: at_128, 256: large[:, ::2, ::2], 512: large})

    inner = _Brighten(128)
    fr = FaceRestorer(inner, sf.SyntheticFaceDetector(), [ref], config=PipelineConfig(lookahead=0))
    assert fr.reference_sets[0].crops.shape[1] == 512
    assert inner.encoded.shape == (2, 3, 128, 128) and torch.allclose(inner.encoded, torch.full_like(inner.encoded, 7 / 255))


def test_references_given_at_the_model_side_are_encoded_as_given():
    """Reference sets of 128-px crops with faces cut up to 512: the model encodes the crops as they
    were given (no enlarge-and-shrink round trip), the detail stage gets them at each side."""
    import synthetic_faces as sf

    from streamrestore.faces.identity import ReferenceSet

    crops = np.stack([sf.aligned_face("ann", 128, variant=v) for v in range(2)])
    ref = ReferenceSet("ann", crops, np.ones((2, 4), np.float32) / 2, ["a", "b"])

    inner = _Brighten(128)
    fr = FaceRestorer(inner, sf.SyntheticFaceDetector(), [ref], config=PipelineConfig(lookahead=0))
    assert fr.crop_sides == (128, 256, 512) and fr.reference_sets[0] is ref
    assert torch.allclose(inner.encoded, torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255, atol=1e-6)
    assert [fr._prepared["ann", side].detail[0].shape[0] for side in fr.crop_sides] == [128, 256, 512]
    again = fr.fresh()
    assert again.reference_sets[0] is ref
