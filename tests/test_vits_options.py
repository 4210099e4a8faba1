"""A voice's synthesis options: one SynthesisOptions value or the same keywords, resolved by name against
the voice's own values."""

from __future__ import annotations

import numpy as np
import pytest
from lipstream.models.synthesis import SynthesisDefaults, SynthesisOptions
from lipstream.models.vits import DEFAULT_VOICE, Voice, VoiceError, load_voice


@pytest.fixture(scope="module")
def joe() -> Voice:
    return load_voice(DEFAULT_VOICE, device="cpu")


def test_options_and_keywords_are_the_same_request(joe: Voice) -> None:
    text = "Options by name."
    quiet = SynthesisOptions(noise_scale=0.0, noise_scale_w=0.0, length_scale=1.3)
    by_value = joe.synthesize(text, quiet)
    by_keywords = joe.synthesize(text, noise_scale=0.0, noise_scale_w=0.0, length_scale=1.3)
    assert np.array_equal(by_value.audio, by_keywords.audio)
    streamed = np.concatenate(list(joe.synthesize_stream(text, options=quiet)))
    assert len(streamed) == len(by_value.audio)
    slower = joe.synthesize(text, SynthesisOptions(noise_scale=0.0, noise_scale_w=0.0, length_scale=2.0))
    assert len(slower.audio) > len(by_value.audio)  # length_scale reaches the durations, not a noise
    with pytest.raises(TypeError, match="not both"):
        joe.synthesize(text, quiet, noise_scale=0.5)


def test_unset_options_are_the_voice_s_own_and_out_of_range_ones_are_named(joe: Voice) -> None:
    assert isinstance(joe.defaults, SynthesisDefaults)
    assert joe._scales(SynthesisOptions()) == joe.defaults
    assert joe._scales(SynthesisOptions(noise_scale=0.0)) == SynthesisDefaults(
        joe.defaults.length_scale, 0.0, joe.defaults.noise_scale_w
    )
    with pytest.raises(VoiceError, match="noise_scale_w 11.0 is out of range"):
        joe.synthesize("Hi.", noise_scale_w=11.0)
    with pytest.raises(VoiceError, match="length_scale 0.01 is out of range"):
        joe.synthesize("Hi.", SynthesisOptions(length_scale=0.01))
