"""PyTorch sessions: eager fp32, or bf16 autocast with channels-last memory."""

from __future__ import annotations

import numpy as np

from facerec.runtime.base import SessionBase, SessionInfo, set_torch_threads


class TorchSession(SessionBase):
    """Runs an ``nn.Module`` on the CPU under ``torch.inference_mode``.

    Args:
        module: the network, put into eval mode (the caller keeps its own reference;
            this session may switch it to channels-last in place, which is numerically
            neutral for other fp32 users).
        input_shape: ``(n, c, h, w)`` with ``None`` for dynamic dimensions.
        output_names: names given to the module's outputs (a tensor, or a list/tuple).
        precision: ``fp32`` or ``bf16`` (autocast; worth it on CPUs with AVX512-BF16/AMX).
        threads: intra-op threads; PyTorch's pool is process-wide (see
            :func:`~facerec.runtime.base.set_torch_threads`).
        channels_last: run in NHWC memory order: about 2x faster for the CSP/ResNet
            convolutions of oneDNN here, same numbers. Always used with bf16.
    """

    def __init__(self, module, input_shape: tuple[int | None, ...], output_names: tuple[str, ...], *,
                 precision: str, threads: int, channels_last: bool = True, source: str = "module") -> None:
        import torch

        self._torch = torch
        set_torch_threads(threads)
        self.module = module.float().eval()
        self.bf16 = precision == "bf16"
        self.channels_last = channels_last or self.bf16
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.info = SessionInfo("input", tuple(input_shape), tuple(output_names), "torch", precision, threads,
                                source)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(batch)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.module(x)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [o.float().contiguous().numpy() for o in outs]
