"""The onnxruntime runtime of a voice (text side, flow and decoder exported from our torch model) against
the torch runtime and the stored onnxruntime reference, whole and streamed; the export cache; runtime
selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lipstream.models.vits import DEFAULT_VOICE, Voice, VoiceError, load_voice
from lipstream.models.vits import onnx_runtime as onnx_runtime_module
from lipstream.models.vits.synthesizer import ModelConfig, SynthesizerTrn

from tests.test_vits_support import CONFORMANCE, snr_db

JOE_IO = np.load(CONFORMANCE / "piper_joe_io.npz")
SENTENCES = range(3)


@pytest.fixture(scope="module")
def joe_ort() -> Voice:
    return load_voice(DEFAULT_VOICE, device="cpu", runtime="onnxruntime")


@pytest.fixture(scope="module")
def joe_torch() -> Voice:
    return load_voice(DEFAULT_VOICE, device="cpu", runtime="torch")


def _audio(voice: Voice, ids: np.ndarray) -> np.ndarray:
    """The voice's audio for phoneme ids at noise 0, all through its own runtime."""
    with torch.inference_mode():
        ids_t = torch.tensor(ids)[None]
        prior = voice.model.prior(ids_t, None, 0.0, 1.0, 0.0, text_stats=voice._text_stats())
    return np.concatenate(list(voice._decode(prior, chunked=False)))


def test_runtime_is_the_one_asked_for(joe_ort: Voice, joe_torch: Voice) -> None:
    assert (joe_ort.runtime, joe_torch.runtime) == ("onnxruntime", "torch")
    assert joe_ort._onnx is not None and joe_torch._onnx is None
    assert load_voice(DEFAULT_VOICE, device="cpu").runtime == "onnxruntime"  # auto, on CPU
    assert "runtime='onnxruntime'" in repr(joe_ort)


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(VoiceError, match="'tensorrt'.*auto, torch, onnxruntime"):
        load_voice(DEFAULT_VOICE, device="cpu", runtime="tensorrt")
    with pytest.raises(VoiceError, match="CPU only; got device cuda:0"):
        load_voice(DEFAULT_VOICE, device="cuda:0", runtime="onnxruntime")


@pytest.mark.parametrize("i", SENTENCES)
def test_onnxruntime_text_side_equals_torch(joe_ort: Voice, i: int) -> None:
    ids = torch.tensor(JOE_IO[f"ids_{i}"])[None]
    noise_w = torch.randn(1, 2, ids.size(1), generator=torch.Generator().manual_seed(i)) * 0.8
    assert joe_ort._onnx is not None
    with torch.inference_mode():
        ours = joe_ort._onnx.text_stats(ids, noise_w)
        reference = joe_ort.model.text_stats(ids, noise_w)
    for name, a, b in zip(("m_p", "logs_p", "logw"), ours, reference, strict=True):
        assert a.shape == b.shape, name
        assert float((a - b).abs().max()) < 1e-4, name


@pytest.mark.parametrize("i", SENTENCES)
def test_onnxruntime_equals_torch_and_the_reference(joe_ort: Voice, joe_torch: Voice, i: int) -> None:
    ids = JOE_IO[f"ids_{i}"]
    ours_ort, ours_torch = _audio(joe_ort, ids), _audio(joe_torch, ids)
    reference = JOE_IO[f"audio_{i}"]
    assert ours_ort.shape == ours_torch.shape == reference.shape
    assert ours_ort.dtype == np.float32
    assert snr_db(ours_torch, ours_ort) >= 60.0
    assert snr_db(reference, ours_ort) >= 60.0


def _streamed_equals_whole(voice: Voice, text: str) -> np.ndarray:
    """The text decoded in windows equals its one-piece decode; returns the one-piece audio."""
    whole = voice.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)
    chunks = list(voice.synthesize_stream(text, noise_scale=0.0, noise_scale_w=0.0))
    assert len(chunks) >= 3
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.audio.shape
    assert snr_db(whole.audio, streamed) >= 60.0
    assert float(np.max(np.abs(streamed - whole.audio))) < 1e-3
    return whole.audio


def test_onnxruntime_stream_equals_one_piece_and_torch(joe_ort: Voice, joe_torch: Voice) -> None:
    text = "Streaming decodes the latent in windows; the joins must not be audible at all, not even a little."
    whole = _streamed_equals_whole(joe_ort, text)
    in_torch = joe_torch.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)
    assert in_torch.audio.shape == whole.shape
    assert snr_db(in_torch.audio, whole) >= 60.0


def test_export_is_cached_by_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSTREAM_CACHE_DIR", str(tmp_path))
    first = load_voice(DEFAULT_VOICE, device="cpu", runtime="onnxruntime")
    exported = sorted(p.name for p in (tmp_path / "vits").glob("*.onnx"))
    assert [n.split("-")[0] for n in exported] == ["dec", "flow", "text"]
    # The exporter restores its wrappers' train/eval mode recursively: the voice must stay in eval mode.
    assert not any(module.training for module in first.model.modules())

    export = onnx_runtime_module._export

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_runtime_module, "_export", no_export)
    again = load_voice(DEFAULT_VOICE, device="cpu", runtime="onnxruntime")
    assert sorted(p.name for p in (tmp_path / "vits").glob("*.onnx")) == exported
    ids = JOE_IO["ids_1"]
    assert np.array_equal(_audio(first, ids), _audio(again, ids))

    # Other weights, another export: the key is the weights, not the voice's name.
    monkeypatch.setattr(onnx_runtime_module, "_export", export)
    with torch.no_grad():
        again.model.dec.conv_post.weight.mul_(0.5)
    changed = onnx_runtime_module.OnnxVoiceRuntime(again.model)
    assert len(list((tmp_path / "vits").glob("*.onnx"))) == 6
    assert changed.paths[2].name not in exported


def test_torch_stream_still_equals_one_piece(joe_torch: Voice) -> None:
    # test_vits_piper's streaming test runs the default runtime; this keeps the torch fallback covered.
    text = "The torch runtime streams in windows too, and its joins must be as clean as ever."
    _streamed_equals_whole(joe_torch, text)


@pytest.mark.parametrize("use_sdp", [True, False])
def test_exported_graphs_equal_torch_for_conditioned_voices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_sdp: bool
) -> None:
    # A small multi-speaker model, either duration predictor: the graphs take g, and noise_w only with the
    # stochastic predictor (the plain one has no such input).
    monkeypatch.setenv("LIPSTREAM_CACHE_DIR", str(tmp_path))
    config = ModelConfig(
        n_vocab=40, inter_channels=16, hidden_channels=16, filter_channels=32, n_layers=2,
        resblock="2", resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),),
        upsample_rates=(4, 4), upsample_initial_channel=32, upsample_kernel_sizes=(8, 8),
        n_speakers=3, gin_channels=8, use_sdp=use_sdp,
    )
    torch.manual_seed(0)
    model = SynthesizerTrn(config)
    model.prepare_for_inference()
    runtime = onnx_runtime_module.OnnxVoiceRuntime(model, threads=1)
    inputs = [i.name for i in runtime._text.get_inputs()]
    assert inputs == (["ids", "noise_w", "g"] if use_sdp else ["ids", "g"])
    ids = torch.randint(1, 40, (1, 23))
    noise_w = torch.randn(1, 2, 23) * 0.8
    with torch.inference_mode():
        g = model.speaker_embedding(2)
        for a, b in zip(runtime.text_stats(ids, noise_w, g), model.text_stats(ids, noise_w, g), strict=True):
            assert a.shape == b.shape and float((a - b).abs().max()) < 1e-4
        z_p = torch.randn(1, 16, 57)
        z = runtime.latent(z_p, g)
        assert float((z - model.latent(z_p, g)).abs().max()) < 1e-4
        assert float((runtime.decode(z, g) - model.decode(z, g)).abs().max()) < 1e-4
        with pytest.raises(ValueError, match="speaker conditioning"):
            runtime.decode(z, None)


def test_context_frames_are_the_receptive_fields(joe_torch: Voice) -> None:
    # Chunked synthesis is exact only if a window's outputs depend on nothing beyond its context: change
    # the input from `window + context` on and the window's outputs stay; from one frame nearer, they move.
    model, window = joe_torch.model, 40
    hop = model.hop_length
    torch.manual_seed(0)
    z = torch.randn(1, model.config.inter_channels, window + 3 * joe_torch.context_frames)
    with torch.inference_mode():
        for context, run, per_frame in (
            (joe_torch.context_frames, model.decode, hop),
            (model.flow_context_frames, model.latent, 1),
        ):
            reference = run(z)[..., : window * per_frame]
            for changed_from, stays in ((window + context, True), (window + context - 1, False)):
                other = z.clone()
                other[:, :, changed_from:] += 1.0
                unchanged = torch.equal(run(other)[..., : window * per_frame], reference)
                assert unchanged == stays, (run.__name__, context, changed_from)


def test_kept_frames_equal_one_piece_and_later_stages_skip_the_context(
    joe_ort: Voice, joe_torch: Voice
) -> None:
    # A window passes its context and the frames it keeps: both runtimes return exactly those frames, at
    # the clause's edges and inside it, and the decoder's costly last stage never runs over the context.
    model, hop = joe_torch.model, joe_torch.hop_length
    dec_ctx, flow_ctx = joe_torch.context_frames, model.flow_context_frames
    torch.manual_seed(1)
    z_p = torch.randn(1, model.config.inter_channels, 120)
    lengths: list[int] = []
    last_stage = model.dec.resblocks[-1]
    hook = last_stage.register_forward_pre_hook(lambda _module, args: lengths.append(args[0].size(-1)))
    try:
        with torch.inference_mode():
            z, audio = model.latent(z_p), model.decode(model.latent(z_p))
            for first, end in ((0, 4), (50, 54), (60, 92), (100, 120)):
                for context, run, whole, per_frame in (
                    (flow_ctx, (model.latent, joe_ort._onnx.latent), z, 1),
                    (dec_ctx, (model.decode, joe_ort._onnx.decode), audio, hop),
                ):
                    lo, hi = max(0, first - context), min(120, end + context)
                    keep = torch.tensor([first - lo, end - lo])
                    source = z_p if per_frame == 1 else z
                    expected = whole[..., first * per_frame : end * per_frame]
                    for runtime in run:
                        lengths.clear()
                        got = runtime(source[:, :, lo:hi], None, keep)
                        assert got.shape == expected.shape, (runtime, first, end)
                        assert float((got - expected).abs().max()) < 1e-4, (runtime, first, end)
                        if runtime is run[0] and per_frame == hop:  # the torch decoder
                            # The cut before the last upsampling, in audio samples.
                            margin = model.dec.cut_margins[-1] * hop // model.dec.cut_scales[-1]
                            assert lengths and lengths[0] <= (end - first) * hop + 2 * margin
    finally:
        hook.remove()
