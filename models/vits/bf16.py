"""The decoder in bfloat16, for CPUs that multiply bf16 natively (AVX512_BF16 or AMX): the same generator,
its weights and activations rounded to bf16, run by torch's oneDNN convolutions (channels-last). About half
the decoder's CPU per second of speech, its audio ~40 dB from fp32's (bench/FIGURES.md): an opt-in precision
for a server that needs more voices per core, not the default.

oneDNN builds a kernel for each new input shape (tens of milliseconds); chunked synthesis therefore rounds
its last window to `frames_multiple` frames (`Voice._decode`), so a few shapes serve every clause.
"""

from __future__ import annotations

import copy
import warnings

import torch

from .errors import VoiceError
from .generator import Generator
from .onnx_runtime import _Decoder

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device) -> None:
    """Raises VoiceError for a precision this machine cannot run."""
    if precision not in PRECISIONS:
        raise VoiceError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if device.type != "cpu":
        raise VoiceError(f"precision 'bf16' is for the CPU decoder; got device {device}: use fp32 there")
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        raise VoiceError(
            "precision 'bf16' needs a CPU that multiplies bf16 natively (AVX512_BF16 or AMX), which this "
            "one lacks (it would be slower than fp32): use fp32"
        )


class Bf16Decoder:
    """`decode(z, g, keep)` of a generator prepared for inference, computed in bf16 (thread-safe)."""

    frames_multiple = 32
    """Windows are rounded to this many latent frames: each new shape costs oneDNN a new kernel."""

    def __init__(self, dec: Generator, conditioned: bool, threads: int | None = None) -> None:
        """`conditioned`: every call gets the speaker conditioning g (a voice with a speaker embedding);
        otherwise none does, as upstream runs a conditioned decoder without speakers."""
        bf16 = copy.deepcopy(dec).to(torch.bfloat16)
        bf16.use_channels_last()  # its 4-D weights again, now from the bf16 ones
        self.conditioned = conditioned and bf16.cond_or_none is not None
        # Traced, a call runs as one graph that holds the GIL once, not at each of its ~100 ops: in a server
        # whose sessions decode side by side, eager ops handed the GIL around at every one.
        frames, context = 2 * bf16.context_frames + 8, bf16.context_frames
        z = torch.zeros(1, bf16.conv_pre.in_channels, frames, dtype=torch.bfloat16)
        inputs = (z, torch.tensor([context, frames - context]))
        if self.conditioned:
            inputs += (torch.zeros(1, bf16.cond.in_channels, 1, dtype=torch.bfloat16),)
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on batch sizes other than 1
            self._dec = torch.jit.freeze(torch.jit.trace(_Decoder(bf16).eval(), inputs, check_trace=False))
        self._threads = threads

    def decode(
        self, z: torch.Tensor, g: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latent [1, inter, frames] -> float32 audio of the frames [first, end) in keep (default: all)."""
        inputs = (z.to(torch.bfloat16), torch.tensor([0, z.size(2)]) if keep is None else keep)
        if self.conditioned:
            if g is None:
                raise ValueError("this voice's decoder needs the speaker conditioning g")
            inputs += (g.to(torch.bfloat16),)
        elif g is not None:
            raise ValueError("this voice's decoder was made without speaker conditioning: give g=None")
        if self._threads is None:
            return self._dec(*inputs)[0, 0].float()
        # torch's intra-op thread count (OpenMP's) belongs to the calling thread: set for this call only.
        previous = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            return self._dec(*inputs)[0, 0].float()
        finally:
            torch.set_num_threads(previous)
