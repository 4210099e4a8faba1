"""The bf16 decoder (`--voice-precision bf16`): close to fp32, streamed close to one piece, the last window
rounded to whole multiples without changing a sample, and refused by name where it cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lipstream.models.vits import DEFAULT_VOICE, Voice, VoiceError, load_voice
from lipstream.models.vits import bf16 as bf16_module
from lipstream.models.vits.bf16 import Bf16Decoder, check_precision
from lipstream.models.vits.frontend import Clause, Token
from lipstream.models.vits.synthesizer import ModelConfig, SynthesizerTrn

from tests.test_vits_fast_speakers import DATA, _write_voice
from tests.test_vits_support import snr_db

TEXTS = (
    "The quick brown fox jumps over the lazy dog while the weather stays fair and calm.",
    "We will meet tomorrow at the station, and then we can walk to the museum together.",
    "Yes.",
)
NATIVE_BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


@pytest.fixture(scope="module")
def joe() -> Voice:
    return load_voice(DEFAULT_VOICE, device="cpu", threads=1)


def _say(voice: Voice, text: str) -> np.ndarray:
    return np.concatenate(list(voice.synthesize_stream(text, noise_scale=0.0, noise_scale_w=0.0)))


class _Rounding:
    """The fp32 decoder behind the bf16 decoder's interface: windows rounded, every call's window kept."""

    def __init__(self, voice: Voice, multiple: int) -> None:
        self.frames_multiple = multiple
        self._decode = voice.model.decode
        self.windows: list[tuple[int, int, int]] = []  # (input frames, first kept, end kept)

    def decode(
        self, z: torch.Tensor, g: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        assert keep is not None
        self.windows.append((z.size(2), int(keep[0]), int(keep[1])))
        return self._decode(z, g, keep)


def test_a_rounded_last_window_changes_no_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    voice = load_voice(DEFAULT_VOICE, device="cpu", runtime="torch", threads=1)
    for text in TEXTS[:2]:
        plain = _say(voice, text)
        rounding = _Rounding(voice, 32)
        monkeypatch.setattr(voice, "_bf16", rounding)
        rounded = _say(voice, text)
        monkeypatch.setattr(voice, "_bf16", None)
        assert rounded.shape == plain.shape
        assert float(np.max(np.abs(rounded - plain))) < 1e-4
        # The last window reaches back to a whole multiple of frames; the ones before it keep their sizes.
        inputs, first, end = rounding.windows[-1]
        assert len(rounding.windows) >= 3 and end == inputs  # the last one ends at the clause's end
        assert (end - first) % 32 == 0
        assert [w[2] - w[1] for w in rounding.windows[:2]] == [4, 32]


def test_bf16_is_close_to_fp32_and_streams_like_one_piece(joe: Voice) -> None:
    if not NATIVE_BF16:
        with pytest.raises(VoiceError, match="AVX512_BF16 or AMX"):
            load_voice(DEFAULT_VOICE, device="cpu", precision="bf16")
        return
    voice = load_voice(DEFAULT_VOICE, device="cpu", threads=1, precision="bf16")
    assert voice.precision == "bf16" and "bf16" in repr(voice)
    for text in TEXTS:
        reference = _say(joe, text)
        streamed = _say(voice, text)
        whole = voice.synthesize(text, noise_scale=0.0, noise_scale_w=0.0).audio
        assert streamed.shape == whole.shape == reference.shape
        assert snr_db(reference, streamed) >= 30.0  # bf16's rounding, not a different voice
        assert snr_db(whole, streamed) >= 45.0  # the windows join as fp32's do, up to bf16's rounding


def test_precision_is_refused_by_name_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VoiceError, match="unknown precision 'fp16': use one of fp32, bf16"):
        load_voice(DEFAULT_VOICE, device="cpu", precision="fp16")
    with pytest.raises(VoiceError, match="for the CPU decoder; got device cuda"):
        check_precision("bf16", torch.device("cuda"))
    monkeypatch.setattr(bf16_module.torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(bf16_module.torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(VoiceError, match="lacks .* use fp32"):
        check_precision("bf16", torch.device("cpu"))
    check_precision("fp32", torch.device("cpu"))


def test_conditioned_decoder_in_bf16_takes_the_speaker() -> None:
    # bf16 runs (slowly) on any CPU: the traced graph's inputs and the conditioning are checked everywhere.
    config = ModelConfig(
        n_vocab=40, inter_channels=16, hidden_channels=16, filter_channels=32, n_layers=2,
        resblock="2", resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),),
        upsample_rates=(4, 4), upsample_initial_channel=32, upsample_kernel_sizes=(8, 8),
        n_speakers=3, gin_channels=8,
    )
    torch.manual_seed(0)
    model = SynthesizerTrn(config)
    model.prepare_for_inference()
    decoder = Bf16Decoder(model.dec, conditioned=True, threads=1)
    assert decoder.conditioned
    threads = torch.get_num_threads()
    with torch.inference_mode():
        z = torch.randn(1, 16, 57)
        for g in (model.speaker_embedding(0), model.speaker_embedding(2)):
            assert snr_db(model.decode(z, g).numpy(), decoder.decode(z, g).numpy()) >= 30.0
            keep = torch.tensor([20, 40])
            assert snr_db(model.decode(z, g, keep).numpy(), decoder.decode(z, g, keep).numpy()) >= 30.0
        assert torch.get_num_threads() == threads  # each call's one thread was for that call only
        with pytest.raises(ValueError, match="speaker conditioning"):
            decoder.decode(z, None)
        # The same decoder run without speakers (as upstream runs one without an embedding): no g at all.
        plain = Bf16Decoder(model.dec, conditioned=False, threads=1)
        assert snr_db(model.decode(z, None).numpy(), plain.decode(z, None).numpy()) >= 30.0
        with pytest.raises(ValueError, match="without speaker conditioning"):
            plain.decode(z, model.speaker_embedding(0))


@pytest.mark.parametrize("tag", ["single", "multi"])
def test_fast_fine_tuning_speakers_in_bf16(tmp_path: Path, tag: str) -> None:
    # The decoder conditioned on each speaker, as fp32 is (test_vits_fast_speakers), within bf16's rounding.
    path, _ = _write_voice(tmp_path / tag, tag)
    if not NATIVE_BF16:
        with pytest.raises(VoiceError, match="AVX512_BF16 or AMX"):
            load_voice(path, device="cpu", precision="bf16")
        return
    fp32 = load_voice(path, device="cpu", runtime="torch")
    bf16 = load_voice(path, device="cpu", runtime="torch", precision="bf16")
    ids = DATA[f"{tag}_ids"].tolist()
    for voice in (fp32, bf16):
        voice.frontend = lambda text: [Clause([Token("x", tuple(ids))], frozenset())]
    for speaker in fp32.speakers:
        options = {"speaker": speaker, "noise_scale": 0.0, "noise_scale_w": 0.0}
        reference = np.concatenate(list(fp32.synthesize_stream("x", **options)))
        streamed = np.concatenate(list(bf16.synthesize_stream("x", **options)))
        assert streamed.shape == reference.shape
        assert snr_db(reference, streamed) >= 30.0
