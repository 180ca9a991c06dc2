"""Every settings dataclass refuses a value of the wrong kind by the field's name, before a frame
is restored: NaN (which passes every range check) turned faces black, a float count failed inside
a frame, ``temporal=None`` as an attribute error there."""
import math

import numpy as np
import pytest

from streamrestore.blend import PasteConfig
from streamrestore.faces.propagate import PropagationConfig
from streamrestore.faces.track import TrackerConfig
from streamrestore.live.session import LiveConfig
from streamrestore.live.sources import ReconnectPolicy
from streamrestore.model.adapt import AdaptConfig
from streamrestore.pipeline import PipelineConfig
from streamrestore.quality import IdentityGateConfig, QualityGateConfig
from streamrestore.reference_detail import ReferenceDetailConfig
from streamrestore.temporal import TemporalConfig
from streamrestore.video.writer import EncoderSettings


@pytest.mark.parametrize("cls, field, value, words", [
    (TemporalConfig, "tolerance", math.nan, "tolerance must be a finite number, got nan"),
    (TemporalConfig, "frame_tolerance", math.nan, "frame_tolerance must be a finite number"),
    (TemporalConfig, "denoise_sigma", math.nan, "denoise_sigma must be a finite number"),
    (TemporalConfig, "memory", 1.5, "memory must be a whole number, got 1.5"),
    (TemporalConfig, "window", True, "window must be a whole number, got True"),
    (ReferenceDetailConfig, "sigma", math.inf, "sigma must be a finite number, got inf"),
    (ReferenceDetailConfig, "match_blur", math.nan, "match_blur must be a finite number"),
    (QualityGateConfig, "clean_at", math.inf, "clean_at must be a finite number"),
    (IdentityGateConfig, "tolerance", math.nan, "tolerance must be a finite number"),
    (PasteConfig, "max_std_ratio", math.nan, "max_std_ratio must be a finite number"),
    (TrackerConfig, "beta", "5", "beta must be a finite number, got '5'"),
    (PropagationConfig, "max_error", math.nan, "max_error must be a finite number"),
    (PipelineConfig, "min_face", "3", "min_face must be a whole number, got '3'"),
    (PipelineConfig, "min_face", None, "min_face must be a whole number, got None"),
    (PipelineConfig, "max_faces", 1.5, "max_faces must be a whole number"),
    (PipelineConfig, "detect_every", math.nan, "detect_every must be a whole number"),
    (PipelineConfig, "temporal", None, "temporal must be a TemporalConfig, got None"),
    (PipelineConfig, "paste", 5, "paste must be a PasteConfig, got 5"),
    (EncoderSettings, "crf", 18.5, "crf must be a whole number"),
    (ReconnectPolicy, "timeout", math.nan, "timeout must be a finite number"),
    (LiveConfig, "max_width", 1600.0, "max_width must be a whole number"),
    (AdaptConfig, "lr", math.nan, "lr must be a finite number"),
])
def test_a_value_of_the_wrong_kind_is_refused_by_its_field_name(cls, field, value, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        cls(**{field: value})


def test_numbers_of_the_right_kind_are_taken_as_they_are():
    assert TemporalConfig(tolerance=np.float32(12.0), window=np.int64(5)).window == 5
    assert TemporalConfig(tolerance=20).tolerance == 20  # a whole number where a float is meant
    assert PipelineConfig(max_faces=None, crop_resolution="auto").max_faces is None
    assert AdaptConfig(part="unet").steps == 100  # the part's defaults filled in, then checked
