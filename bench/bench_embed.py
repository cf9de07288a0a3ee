"""Embedder speed: milliseconds per face, PyTorch vs ONNX Runtime, at several batch sizes.

Rows:

* MobileFaceNet on its real weights: PyTorch fp32, the released ONNX (batch fixed at 1,
  so ONNX Runtime is called once per face), an ONNX export with a dynamic batch made
  here, and PyTorch bf16 autocast + channels_last.
* MagFace iResNet-50 with random weights of the real size (no official file can be had
  here; speed does not depend on the values): PyTorch fp32, ONNX Runtime on an export made
  in a temporary folder, and PyTorch bf16 autocast + channels_last.

bf16 rows also report the lowest cosine similarity between their embeddings and the fp32
ones. Only on real weights does that number mean anything (MobileFaceNet here); bf16 may
be used only where it is at least 0.999 (what the live loop's ``precision: bf16`` relies on).

Times include preprocessing (``Embedder.embed``). Run with ``python bench/bench_embed.py``;
other busy processes on the same cores inflate PyTorch timings most, so compare rows of
one run, not runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/bench_embed.py``
    try:
        import face_embedding  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import copy
import io
import platform
import tempfile
import time
import warnings
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from face_embedding import Embedder, create_embedder
from face_embedding.checkpoint import TorchEmbedder
from face_embedding.iresnet import iresnet
from face_embedding.onnx_backend import OnnxEmbedder
from facerec.align import align
from facerec.imageio import read_image

SHARED = Path(__file__).resolve().parents[2] / "shared"
#: Typical five landmarks of an LFW deep-funneled 250x250 image (see tests/test_embedders.py).
LFW_LANDMARKS = np.array([[104.0, 112.3], [148.5, 112.2], [125.7, 137.0], [107.7, 156.6], [145.6, 156.1]])
#: The live loop's criterion for ``precision: bf16`` (tests/test_embedders.py checks it on real faces).
BF16_MIN_COSINE = 0.999


class Bf16ChannelsLast(TorchEmbedder):
    """A :class:`TorchEmbedder` run under bf16 autocast with channels_last tensors."""

    def __init__(self, base: TorchEmbedder) -> None:
        super().__init__(base.model.to(memory_format=torch.channels_last), base.key, base.spec, base.dim,
                         base.batch_size)

    def forward_raw(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.model(x)
        return out.float().reshape(len(batch), -1).numpy()


def real_faces(limit: int = 32) -> np.ndarray | None:
    """Aligned crops of real people from ../shared (LFW with fixed landmarks), or None."""
    lfw = SHARED / "data" / "lfw"
    if not lfw.is_dir():
        return None
    every = sorted(lfw.glob("*/*.jpg"))
    files = every[:: max(1, len(every) // limit)][:limit]
    return np.concatenate([align(read_image(f), LFW_LANDMARKS).images for f in files])


def ms_per_face(embedder: Embedder, batch: int, min_seconds: float = 1.0, min_reps: int = 3) -> float:
    """Median wall time of ``embed`` on ``batch`` faces, divided by ``batch``, in ms."""
    embedder.batch_size = batch
    faces = np.random.default_rng(0).integers(0, 256, (batch, 112, 112, 3), dtype=np.uint8)
    embedder.embed(faces)  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        embedder.embed(faces)
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times)) / batch


def min_cosine(a: Embedder, b: Embedder, faces: np.ndarray) -> float:
    va, vb = a.embed(faces).vectors, b.embed(faces).vectors
    return float(np.min(np.sum(va * vb, axis=1)))


def export_onnx(net: torch.nn.Module, path: Path) -> None:
    """Export with a dynamic batch axis; the TorchScript exporter when onnxscript is absent."""
    args = (torch.zeros(1, 3, 112, 112),)
    names = {"input_names": ["input"], "output_names": ["output"]}
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        dynamo = False
    else:
        dynamo = True
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(net, args, str(path), dynamo=True, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("n")},), **names)
        else:
            torch.onnx.export(net, args, str(path), dynamo=False, opset_version=17,
                              dynamic_axes={"input": {0: "n"}, "output": {0: "n"}}, **names)


def _row(model: str, weights: str, engine: str, make: Callable[[], Embedder], batches: Sequence[int],
         note: str = "") -> dict:
    emb = make()
    row = {"model": model, "weights": weights, "engine": engine, "note": note}
    for b in batches:
        row[f"b{b}"] = ms_per_face(emb, b)
    return row


def bench_embedders(batches: Sequence[int] = (1, 32), weights_dir: str | Path | None = None) -> list[dict]:
    """Time every embedder row (see module docstring).

    Args:
        batches: batch sizes to time.
        weights_dir: folder holding ``mobilefacenet_foamliu_ms1m.{pt,onnx}``; default: the
            usual search path (``./weights``, ``FACEREC_WEIGHTS``) and then ``../shared/models``.

    Returns:
        One dict per row: ``model``, ``weights`` (``real``/``random``), ``engine``,
        ``b<N>`` ms per face at batch N, ``note``; bf16 rows add ``min_cos_vs_fp32``.
    """
    if weights_dir is None and not (Path.cwd() / "weights" / "mobilefacenet_foamliu_ms1m.pt").is_file():
        weights_dir = SHARED / "models"
    threads = torch.get_num_threads()
    faces = real_faces()
    rows: list[dict] = []

    mfn = create_embedder("mobilefacenet", weights_dir=weights_dir)
    rows.append(_row("mobilefacenet", "real", "torch fp32", lambda: mfn, batches))
    rows.append(_row("mobilefacenet", "real", "ORT (released .onnx)",
                     lambda: create_embedder("mobilefacenet", weights_dir=weights_dir, backend="onnx", threads=threads),
                     batches, "batch fixed at 1: one call per face"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilefacenet_dynamic.onnx"
        export_onnx(mfn.model, path)
        rows.append(_row("mobilefacenet", "real", "ORT (own export)",
                         lambda: OnnxEmbedder(path, "mobilefacenet", mfn.spec, threads=threads), batches,
                         "dynamic batch"))
    mfn_fp32 = create_embedder("mobilefacenet", weights_dir=weights_dir)
    bf16 = Bf16ChannelsLast(create_embedder("mobilefacenet", weights_dir=weights_dir))
    row = _row("mobilefacenet", "real", "torch bf16+channels_last", lambda: bf16, batches)
    if faces is not None:
        cos = min_cosine(mfn_fp32, bf16, faces)
        row["min_cos_vs_fp32"] = cos
        row["note"] = (f"min cosine vs fp32 {cos:.6f} on {len(faces)} LFW faces: "
                       + ("usable" if cos >= BF16_MIN_COSINE else f"below {BF16_MIN_COSINE}, do not use"))
    rows.append(row)

    torch.manual_seed(0)
    net = iresnet(50).eval()
    r50 = create_embedder("magface-iresnet50", model=net)
    rows.append(_row("magface-iresnet50", "random", "torch fp32", lambda: r50, batches))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "magface_iresnet50.onnx"
        export_onnx(net, path)
        rows.append(_row("magface-iresnet50", "random", "ORT (own export)",
                         lambda: OnnxEmbedder(path, "magface-iresnet50", r50.spec, threads=threads), batches,
                         "dynamic batch"))
    r50_bf16 = Bf16ChannelsLast(create_embedder("magface-iresnet50", model=copy.deepcopy(net)))
    row = _row("magface-iresnet50", "random", "torch bf16+channels_last", lambda: r50_bf16, batches,
               "cosine on random weights says nothing; check on the real checkpoint")
    if faces is not None:
        row["min_cos_vs_fp32"] = min_cosine(r50, r50_bf16, faces)
    rows.append(row)
    return rows


def format_table(rows: list[dict], batches: Sequence[int]) -> str:
    head = ["model", "weights", "engine", *(f"ms/face b{b}" for b in batches), "min cos vs fp32", "note"]
    body = [
        [r["model"], r["weights"], r["engine"], *(f"{r[f'b{b}']:.2f}" for b in batches),
         f"{r['min_cos_vs_fp32']:.6f}" if "min_cos_vs_fp32" in r else "", r["note"]]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes (default: 1 32)")
    p.add_argument("--weights_dir", default=None, help="folder with the MobileFaceNet weights")
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime

    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}")
    rows = bench_embedders(args.batches, args.weights_dir)
    print(format_table(rows, args.batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
