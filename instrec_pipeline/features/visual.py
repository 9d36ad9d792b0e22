"""Inception v3 penultimate-layer (2048-d) frame embeddings with torchvision.

The model runs in eval mode (the 2017 code extracted with dropout and batch norm in training mode), its
classifier replaced by an identity so the output is the pooled 2048-d feature. Frames of many videos go
through in fixed-size batches, channels-last; under bf16 autocast where ``precision`` says so.

Runtime: on CPU, ``runtime="openvino"`` (or ``"auto"``, the pipeline's setting) runs the same network
compiled by OpenVINO, 1.7–2.8× torch's bf16 channels-last rate on these CPUs (``make bench``, section h) and
within cosine 0.9999 of torch's float32 (tested); ``"torch"``, this class's default, is the reference
arithmetic and the GPU's runtime. The conversion (~30 s) is cached on disk per weights.

Weights: torchvision's ImageNet weights when they can be loaded (the hub cache or a download), a local
weights file when given, random initialisation only when asked for (``"random"``) or, with ``"auto"``,
when ImageNet weights cannot be had — and the choice is returned so it is recorded in the metadata.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torchvision.models import Inception_V3_Weights, inception_v3

if TYPE_CHECKING:
    import openvino as ov

log = logging.getLogger(__name__)

EMBEDDING_DIM = 2048
#: ImageNet statistics torchvision's Inception weights expect (``transform_input`` then maps them to the
#: original Google normalisation).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LoadedWeights:
    """Which weights the embedder really uses; goes into the store's attributes and Dagster metadata."""

    kind: str  # "imagenet" | "file" | "random"
    source: str  # torchvision enum name, file path or "random init"
    digest: str  # identifies the weights, so a change re-extracts
    seed: int = 0  # of a random init: what rebuilds the same network later (predict, fine-tuning)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; anything else is taken literally (``cpu``, ``cuda:1``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    weights = Inception_V3_Weights.IMAGENET1K_V1
    return weights.get_state_dict(progress=False, check_hash=True)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def load_inception(weights: str = "auto", seed: int = 0) -> tuple[nn.Module, LoadedWeights]:
    """Build Inception v3 with its classifier removed; ``weights`` is auto | imagenet | random | a path."""
    model = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    if weights in ("auto", "imagenet"):
        try:
            model.load_state_dict(_imagenet_state_dict())
            loaded = LoadedWeights("imagenet", Inception_V3_Weights.IMAGENET1K_V1.url, "imagenet1k_v1")
        except Exception as exc:  # no network, no cache: only "auto" may fall back
            if weights == "imagenet":
                raise RuntimeError(f"ImageNet weights for Inception v3 could not be loaded: {exc}") from exc
            log.warning("ImageNet weights unavailable (%s); using random init (seed %d)", exc, seed)
            weights = "random"
    if weights == "random":
        torch.manual_seed(seed)
        model = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=True)
        _calibrate_batch_norm(model, seed)
        loaded = LoadedWeights(
            "random", f"random init (seed {seed}), BN calibrated on noise", f"random-{seed}", seed
        )
    elif weights not in ("auto", "imagenet"):
        path = Path(os.path.expanduser(weights))
        if not path.is_file():
            raise FileNotFoundError(f"Inception v3 weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        # The classifier heads are dropped anyway: accept files saved with or without them.
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in [*missing, *unexpected] if not k.startswith(("fc.", "AuxLogits."))]
        if bad:
            raise ValueError(f"{path} is not an Inception v3 state dict (mismatched keys: {bad[:5]})")
        loaded = LoadedWeights("file", str(path), _file_digest(path))
    model.fc = nn.Identity()
    model.AuxLogits = None
    model.aux_logits = False
    return model.eval(), loaded


def _calibrate_batch_norm(model: nn.Module, seed: int) -> None:
    """Set a randomly initialised net's batch-norm statistics from seeded smooth noise.

    Untrained running statistics (mean 0, var 1) let activations grow ~1e10 through 94 layers and the
    2048-d output collapses towards one direction; statistics measured on fixed, data-independent noise
    keep every layer normalised, so random features stay informative and deterministic.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    gen = torch.Generator().manual_seed(seed)
    noise = torch.nn.functional.avg_pool2d(torch.rand(32, 3, 299, 299, generator=gen), 9, 1, 4)
    model.train()
    with torch.no_grad():
        model((noise - 0.45) / 0.25)
    model.eval()


class Normalise(nn.Module):
    """uint8 NHWC frames → ImageNet-normalised float NCHW, channels-last: Inception's input.

    A module (buffers, not constants) so it moves with ``.to(device)`` and serves both the frozen
    embedder and the fine-tuned classifier.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matrix units that make autocast pay on CPU (Linux reports them here)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` on CUDA and on CPUs with bf16 units, else ``fp32``."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()) else "fp32"


RUNTIMES = ("auto", "torch", "openvino")


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``auto`` → ``openvino`` on CPU, ``torch`` on a GPU (OpenVINO is CPU-only here)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "openvino" and device.type != "cpu":
        raise ValueError(f"runtime openvino runs on the CPU, not on {device}")
    if runtime != "auto":
        return runtime
    return "openvino" if device.type == "cpu" else "torch"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "instrec" / "openvino"


def _openvino_ir(model: nn.Module, weights: LoadedWeights) -> Path:
    """The network converted to OpenVINO's IR, cached per weights, torch and OpenVINO versions.

    Converting traces the whole network (~30 s on 2 cores); reading the cached IR takes ~50 ms. Weights stay
    float32 in the file (no fp16 compression), so ``precision="fp32"`` is float32 throughout. Written
    under a temporary name and renamed, weights before the XML that names them, so a concurrent reader
    sees a complete pair or none; one process converts while the others (a backfill's runs starting
    together) wait for its file rather than each spending the 30 s.
    """
    import openvino as ov

    key = hashlib.sha256(f"{weights.digest}|{torch.__version__}|{ov.__version__}".encode()).hexdigest()[:16]
    xml = _cache_dir() / f"inception_v3-{key}.xml"
    if xml.exists() and xml.with_suffix(".bin").exists():
        return xml
    xml.parent.mkdir(parents=True, exist_ok=True)
    with open(xml.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if xml.exists() and xml.with_suffix(".bin").exists():  # converted by another process meanwhile
            return xml
        example = torch.rand(1, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        converted = ov.convert_model(model, example_input=example)  # dynamic batch and side: any crop
        with tempfile.TemporaryDirectory(dir=xml.parent) as tmp:
            part = Path(tmp) / xml.name
            ov.save_model(converted, part, compress_to_fp16=False)
            os.replace(part.with_suffix(".bin"), xml.with_suffix(".bin"))
            os.replace(part, xml)
    return xml


_CORE: list[ov.Core] = []
_CORE_LOCK = threading.Lock()


def _openvino_core() -> ov.Core:
    """One OpenVINO Core per process, kept to its end (made under a lock: two threads asking first must
    not make two).

    Its CPU plugin swaps the thread's alternate signal stack for one of its own (room for AMX state) and
    puts the previous one back when it is destroyed. Plugins of several Cores destroyed out of order
    (embedders freed by the garbage collector) left an unmapped stack in place, and the next signal
    handled in Python — a DataLoader worker's SIGCHLD in training — killed the process with a silent
    SIGSEGV. One plugin for the process's life cannot.
    """
    import openvino as ov

    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(ov.Core())
        return _CORE[0]


class _OpenVINOInception:
    """Inception v3 compiled by OpenVINO for this CPU, called on batches of uint8 NHWC frames.

    The ImageNet normalisation (:class:`Normalise`) is compiled into the graph as OpenVINO preprocessing,
    where it folds into the first convolution: the frames go in as they come out of the store, with no
    float copy made beside the network (that copy cost 6 % of the forward at OpenVINO's bf16 rate).
    ``precision`` maps onto OpenVINO's inference precision hint (it would otherwise pick bf16 by itself
    on CPUs with bf16 units, whatever was asked).

    Compiled for throughput: OpenVINO splits the cores into streams, each running its own request on a
    few threads, and :meth:`stream` keeps one piece of work in flight per stream. Measured on 2 cores
    (AMX, bf16): 2 streams × 16 frames give ~250 frames/s against ~235 for one 2-thread request of 32,
    and a thread reading the next frames beside them delays one stream instead of stalling every core at
    each layer's barrier (``make bench``, c).
    """

    def __init__(self, model: nn.Module, weights: LoadedWeights, precision: str) -> None:
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        core = _openvino_core()
        ppp = PrePostProcessor(core.read_model(_openvino_ir(model, weights)))
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).mean([m * 255 for m in _MEAN]).scale(
            [s * 255 for s in _STD]
        )
        hint = "bf16" if precision == "bf16" else "f32"
        compiled = core.compile_model(
            ppp.build(), "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "THROUGHPUT"}
        )
        n = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.requests = [compiled.create_infer_request() for _ in range(n)]

    def stream(self, pieces: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``(n, 2048)`` float32 for each uint8 NHWC piece, in order, one piece in flight per request.

        A request that finishes is given the next piece before its result is handed on, so no stream
        waits while the consumer stores that result; the next piece is asked for only once a request is
        free, so a reader producing pieces has had a whole forward's time for it.
        """
        free: list[ov.InferRequest] = list(self.requests)
        busy: deque[tuple[ov.InferRequest, np.ndarray]] = deque()
        todo = iter(pieces)

        def start() -> bool:
            """The next piece on a free request; False when there is none."""
            piece = next(todo, None)
            if piece is None:
                return False
            request = free.pop()
            request.start_async([piece], share_inputs=True)  # read in place: kept alive in ``busy``
            busy.append((request, piece))
            return True

        try:
            while free and start():  # one piece per request to begin with
                pass
            while busy:
                request, _ = busy.popleft()
                request.wait()
                out = request.get_output_tensor(0).data.copy()  # the request reuses its output buffer
                free.append(request)
                start()
                yield out
        finally:
            for request, _ in busy:  # a consumer that stops early: no request left reading freed frames
                request.wait()

    def split(self, batch: np.ndarray) -> list[np.ndarray]:
        """A batch cut into one piece per request (none for an empty batch), read in place."""
        batch = np.ascontiguousarray(batch)
        return np.array_split(batch, min(len(self.requests), len(batch))) if len(batch) else []

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """One batch, every stream working on a piece of it."""
        return torch.from_numpy(np.concatenate(list(self.stream(self.split(frames.numpy())))))


class FrameEmbedder:
    """Batched frame → 2048-d embedding, on the GPU when there is one."""

    def __init__(
        self,
        weights: str = "auto",
        device: str = "auto",
        batch_size: int = 64,
        seed: int = 0,
        precision: str = "fp32",
        runtime: str = "torch",
    ) -> None:
        self.device = resolve_device(device)
        model, self.weights = load_inception(weights, seed)
        self.batch_size = batch_size
        #: bf16 autocast: 1.5–2× the float32 rate on CPUs with bf16 units, every embedding within cosine
        #: 0.9999 of float32 (tested); recorded with the embeddings, so a change re-extracts them.
        self.precision = resolve_precision(precision, self.device)
        # Channels-last on every device: frames arrive as NHWC, and oneDNN (CPU) as cuDNN (GPU) run
        # convolutions fastest in that layout (measured on CPU: 34 vs 22 frames/s at batch 32).
        model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device)
        self.normalise = Normalise().to(self.device)
        #: torch | openvino (see :func:`resolve_runtime`); recorded with the embeddings, like the precision.
        self.runtime = resolve_runtime(runtime, self.device)
        self._openvino = None
        if self.runtime == "openvino":
            self._openvino = _OpenVINOInception(self.model, self.weights, self.precision)

    def _prepare(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 NHWC → the network's input on the device: normalised float NCHW for torch (the uint8 copy
        is 4× cheaper to move), the frames themselves for OpenVINO (which normalises in its graph)."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, non_blocking=True)
        return x if self._openvino is not None else self.normalise(x)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 RGB → (n, 2048) float32."""
        batches = (frames[i : i + self.batch_size] for i in range(0, len(frames), self.batch_size))
        out = list(self.embed_batches(batches))
        return np.concatenate(out) if out else np.zeros((0, EMBEDDING_DIM), np.float32)

    @torch.inference_mode()
    def embed_batches(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Each batch's ``(n, 2048)`` embeddings, in order, as the batches arrive (a reader thread can
        produce them). On OpenVINO every batch is split across its streams and the next batch's pieces
        start as soon as a stream is free, so no core waits at a batch's end."""
        empty = np.zeros((0, EMBEDDING_DIM), np.float32)
        if self._openvino is None:
            for batch in batches:
                yield self._embed_batch(batch) if len(batch) else empty
            return
        runtime = self._openvino
        sizes: deque[int] = deque()  # pieces per batch, in order (0 for an empty batch)
        done: list[np.ndarray] = []

        def pieces() -> Iterator[np.ndarray]:
            for batch in batches:
                split = runtime.split(batch)
                sizes.append(len(split))
                yield from split

        def ready() -> Iterator[np.ndarray]:
            while sizes and len(done) >= sizes[0]:
                k = sizes.popleft()
                yield np.concatenate(done[:k]) if k else empty
                del done[:k]

        for out in runtime.stream(pieces()):
            done.append(out)
            yield from ready()
        yield from ready()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a prepared batch (:meth:`_prepare`), in this embedder's runtime and precision: what
        :meth:`embed` runs, and what a bare-model benchmark should time."""
        if self._openvino is not None:
            return self._openvino(x)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(x)

    def _embed_batch(self, frames: np.ndarray) -> np.ndarray:
        return self.forward(self._prepare(frames)).float().cpu().numpy()
