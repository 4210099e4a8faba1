"""The GPU side of the Wav2Lip path: every session's mouths pasted into their avatar frames in one batch on
the device (lipstream.models.wav2lip.batch_paste: the same pixels as the CPU's paste_mouth), and JPEGs
encoded in one batch there (torchvision's encode_jpeg on CUDA tensors: nvJPEG).

torchvision is the `gpu` extra (`pip install 'lipstream[server,gpu]'` after a CUDA build of torch 2.13):
its PyPI wheel is built for CUDA and does not import on the CPU build of torch, so it is imported here
only, when a batch is encoded.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

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
