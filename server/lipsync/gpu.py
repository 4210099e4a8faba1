"""The GPU side of the Wav2Lip path: every session's mouths pasted into their avatar frames in one batch on
the device (lipstream.models.wav2lip.batch_paste: the same pixels as the CPU's paste_mouth), and every
session's JPEGs encoded in batches there (JpegBatcher; torchvision's encode_jpeg on CUDA tensors: nvJPEG).

torchvision is the `gpu` extra (`pip install 'lipstream[server,gpu]'` after a CUDA build of torch 2.13):
its PyPI wheel is built for CUDA and does not import on the CPU build of torch, so it is imported here
only, when a batch is encoded.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

FRAMES_KEPT = 64  # avatar frames kept on the device (an avatar's loop, or several still avatars)


class DeviceUnavailableError(RuntimeError):
    """The GPU path cannot run here (names what to install)."""


def encode_jpegs(pictures: Sequence[torch.Tensor], quality: int) -> list[bytes]:
    """BGR (H, W, 3) uint8 tensors, all on one device -> their JPEGs (4:2:0), in one torchvision call
    (on CUDA, nvJPEG's batched encoder)."""
    try:
        from torchvision.io import encode_jpeg  # type: ignore[import-not-found, unused-ignore]
    except (ImportError, RuntimeError) as exc:  # the CUDA wheel on a CPU torch fails with RuntimeError
        raise DeviceUnavailableError(
            f"batched JPEG needs torchvision for this torch ({exc}): pip install 'lipstream[gpu]' "
            "with the CUDA build of torch 2.13"
        ) from exc
    if not pictures:
        return []
    images = [picture.flip(-1).permute(2, 0, 1).contiguous() for picture in pictures]  # RGB (3, H, W)
    encoded: list[torch.Tensor] = encode_jpeg(images, quality=quality)
    sizes = [len(data) for data in encoded]
    joined = torch.cat(encoded).cpu().numpy()  # one copy back for the batch
    offsets = np.cumsum([0, *sizes])
    return [joined[start:end].tobytes() for start, end in zip(offsets[:-1], offsets[1:], strict=True)]


class DeviceCompositor:
    """Pastes the model outputs of a cross-session batch into their avatar frames on one device. The
    avatar frames are uploaded once and kept (FRAMES_KEPT, least recently used out)."""

    def __init__(self, device: str | torch.device, frames_kept: int = FRAMES_KEPT) -> None:
        self.device = torch.device(device)
        self.frames_kept = frames_kept
        # By id(): the array is kept with its tensor, so its id cannot be reused while it is here.
        self._frames: collections.OrderedDict[int, tuple[np.ndarray, torch.Tensor]]
        self._frames = collections.OrderedDict()

    def frame(self, picture: np.ndarray) -> torch.Tensor:
        """The avatar picture (H, W, 3) uint8 on the device (avatar frames never change once loaded)."""
        key = id(picture)
        kept = self._frames.get(key)
        if kept is not None and kept[0] is picture:
            self._frames.move_to_end(key)
            return kept[1]
        tensor = torch.from_numpy(np.ascontiguousarray(picture)).to(self.device)
        self._frames[key] = (picture, tensor)
        while len(self._frames) > self.frames_kept:
            self._frames.popitem(last=False)
        return tensor

    def paste_tensors(
        self, pictures: Sequence[np.ndarray], boxes: Sequence[Any], outputs: np.ndarray | torch.Tensor
    ) -> list[torch.Tensor]:
        """Item i: `outputs[i]` (3, 96, 96) pasted into `pictures[i]` at `boxes[i]`, on the device. Items
        that share a picture size and box are pasted as one batch."""
        from lipstream.models.wav2lip.batch_paste import paste_mouths

        outputs_t = torch.as_tensor(outputs).to(self.device)
        groups: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
        for i, (picture, box) in enumerate(zip(pictures, boxes, strict=True)):
            groups[(*picture.shape, int(box.x1), int(box.y1), int(box.x2), int(box.y2))].append(i)
        pasted: list[torch.Tensor | None] = [None] * len(pictures)
        with torch.inference_mode():
            for items in groups.values():
                frames = torch.stack([self.frame(pictures[i]) for i in items])
                result = paste_mouths(frames, boxes[items[0]], outputs_t[items])
                for i, tensor in zip(items, result, strict=True):
                    pasted[i] = tensor
        return [tensor for tensor in pasted if tensor is not None]

    def paste(
        self, pictures: Sequence[np.ndarray], boxes: Sequence[Any], outputs: np.ndarray | torch.Tensor
    ) -> list[np.ndarray]:
        """`paste_tensors`, brought back as numpy pictures (H, W, 3) uint8 (one copy when all have one
        size)."""
        tensors = self.paste_tensors(pictures, boxes, outputs)
        if not tensors:
            return []
        if all(t.shape == tensors[0].shape for t in tensors):
            return list(torch.stack(tensors).cpu().numpy())
        return [t.cpu().numpy() for t in tensors]

    def encode(self, pictures: Sequence[torch.Tensor | np.ndarray], quality: int) -> list[bytes]:
        """JPEGs of BGR pictures (device tensors, or numpy arrays that are uploaded first), one batch."""
        tensors = [torch.as_tensor(picture).to(self.device) for picture in pictures]
        return encode_jpegs(tensors, quality)


EncodeBatch = Callable[[Sequence[torch.Tensor], int], list[bytes]]


class JpegBatcher:
    """Encodes the JPEGs of every session on one device: a stage thread's `encode` waits for the batch its
    picture goes in, which holds what all sessions asked for meanwhile (up to `max_frames`), encoded in
    one call per quality. When the device fails or does not answer in `timeout_s`, the picture is encoded
    on the CPU (server encode_jpeg) and the failure logged."""

    def __init__(
        self,
        device: str | torch.device,
        max_frames: int = 64,
        *,
        encode: EncodeBatch = encode_jpegs,
        timeout_s: float = 5.0,
    ) -> None:
        self.device = torch.device(device)
        self.max_frames = max_frames
        self.timeout_s = timeout_s
        self._encode = encode
        self._requests: queue.Queue[tuple[np.ndarray, int, concurrent.futures.Future[bytes]] | None]
        self._requests = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lipstream-jpeg-batcher", daemon=True)
        self.batches = 0
        self.frames = 0
        self.failed = False
        """Set at the first failure: from then on every frame is encoded on the CPU."""

    def check(self, picture: np.ndarray, quality: int = 80, min_psnr: float = 30.0) -> None:
        """Encodes `picture` on the device and decodes it: raises DeviceUnavailableError unless it comes
        back within `min_psnr` dB (before the batcher is trusted with the sessions' frames)."""
        import simplejpeg

        try:
            jpeg = self._encode([torch.from_numpy(np.ascontiguousarray(picture)).to(self.device)], quality)[0]
            decoded = simplejpeg.decode_jpeg(jpeg, "BGR")
        except DeviceUnavailableError:
            raise
        except Exception as exc:  # nvJPEG and decoding fail in many ways; all mean "not here"
            raise DeviceUnavailableError(f"JPEG on {self.device} failed its check ({exc})") from exc
        error = np.mean((decoded.astype(np.float64) - picture.astype(np.float64)) ** 2)
        psnr = 10 * np.log10(255.0**2 / max(float(error), 1e-12))
        if decoded.shape != picture.shape or psnr < min_psnr:
            raise DeviceUnavailableError(
                f"JPEG on {self.device} gave {decoded.shape} at {psnr:.1f} dB for {picture.shape}"
            )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._requests.put(None)
        self._thread.join(timeout)

    def encode(self, picture: np.ndarray, quality: int) -> bytes:
        """The JPEG of a BGR (H, W, 3) uint8 picture (as the server's encode_jpeg), encoded on the device."""
        from lipstream.server.lipsync.stage import encode_jpeg

        if self.failed:
            return encode_jpeg(picture, quality)
        future: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        self._requests.put((picture, quality, future))
        try:
            return future.result(timeout=self.timeout_s)
        except Exception as exc:
            future.cancel()
            if not self.failed:
                self.failed = True
                log.error("JPEG on %s failed (%r); the CPU encodes from now on", self.device, exc)
            return encode_jpeg(picture, quality)

    def _run(self) -> None:
        while True:
            first = self._requests.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_frames:
                try:
                    more = self._requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._requests.put(None)
                    break
                batch.append(more)
            live = [item for item in batch if item[2].set_running_or_notify_cancel()]
            by_quality: dict[int, list[tuple[np.ndarray, int, concurrent.futures.Future[bytes]]]] = {}
            for item in live:
                by_quality.setdefault(item[1], []).append(item)
            for quality, items in by_quality.items():
                try:
                    tensors = [torch.from_numpy(np.ascontiguousarray(p)).to(self.device) for p, _, _ in items]
                    jpegs = self._encode(tensors, quality)
                except Exception as exc:
                    for _, _, future in items:
                        future.set_exception(exc)
                    continue
                self.batches += 1
                self.frames += len(items)
                for (_, _, future), jpeg in zip(items, jpegs, strict=True):
                    future.set_result(jpeg)
