"""MedSigLIP on OpenVINO: the torch model is loaded once to fingerprint and convert it, then runs as cached IR."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from retrieval.encoders.base import ModelFingerprint, Vectors
from retrieval.encoders.medsiglip import MedSigLIPEncoder, normalise
from retrieval.encoders.ov_cache import MANIFEST, cache_key, cache_root, manifest_for, publish, read_valid
from retrieval.encoders.ov_convert import (
    IMAGE_XML,
    MIN_INT8_COSINE,
    TEXT_XML,
    compress_image_tower_weights,
    convert_towers,
    image_size,
    quantize_image_tower,
)
from retrieval.encoders.ov_runtime import RuntimeFacts, read_back
from retrieval.errors import MedsearchError, ModelLoadError
from retrieval.imaging.preprocess import ImageProcessor
from retrieval.optional import import_openvino

log = logging.getLogger(__name__)
# (processor, at most this many) -> frames preprocessed exactly as the collection indexed them
CalibrationSource = Callable[[ImageProcessor, int], list[npt.NDArray[np.float32]]]
PRECISIONS = ("fp32", "bf16", "int8", "int8-reduced", "int8-weights")
QUANTISED = ("int8", "int8-reduced")  # calibrated on the collection, kept only where they agree with fp32


class _Tower:
    """One compiled model with its own infer request; calls are serialised (one stream, LATENCY hint)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.lock = threading.Lock()

    def __call__(self, array: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        with self.lock:
            self.request.infer({0: np.ascontiguousarray(array)})
            out: npt.NDArray[np.float32] = np.array(self.request.get_output_tensor(0).data, dtype=np.float32)
        return out


class OpenVINOEncoder:
    """Same protocol and same vectors as `MedSigLIPEncoder`, run by OpenVINO on the CPU.

    fp32 and bf16 share one fp32 IR (bf16 is OpenVINO's inference precision hint); int8 is an NNCF-quantised
    image tower calibrated on the collection's own images, kept in the data folder; the text tower stays fp32
    IR (with the bf16 hint where the CPU has it)."""

    def __init__(
        self,
        model_ref: str,
        data_dir: Path,
        precision: str,
        *,
        threads: int = 0,
        bf16_hint: bool = False,
        calibration: CalibrationSource | None = None,
        calibration_images: int = 300,
        automatic: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown OpenVINO precision {precision!r}")
        self.model_ref = model_ref
        self.data_dir = data_dir
        self.precision = precision
        self.threads = threads
        self.bf16_hint = bf16_hint or precision == "bf16"
        self.calibration = calibration
        self.calibration_images = calibration_images
        self.automatic = automatic  # int8-reduced chosen by auto: without images, or refused, fp32 runs quietly
        self.source = MedSigLIPEncoder(model_ref, "cpu", "fp32")
        self.converted: list[str] = []  # what this load had to convert (empty when the disk cache served it)
        self.cache_dirs: list[Path] = []
        self._lock = threading.Lock()
        self._image: _Tower | None = None
        self._frames: list[npt.NDArray[np.float32]] = []  # calibration frames read before quantising (auto)
        self._text: _Tower | None = None
        self.runtime: RuntimeFacts | None = None  # what the compiled image tower runs, read back at load
        self.warning: str | None = None  # a requested precision not run here, said once (log) and kept for stats
        self.note: str | None = None  # why auto's quantised scheme does not run (stats and /readyz, with `runs`)

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Fingerprint the torch model, convert it unless the cache has it, compile both towers, free torch."""
        with self._lock:
            if self._image is not None:
                return
            try:
                self._load()
            except MedsearchError:
                raise
            except Exception as exc:  # a conversion or compile failure: say how to get going without OpenVINO
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise ModelLoadError(
                    f"OpenVINO could not run {self.model_ref!r} ({type(exc).__name__}: {first[:300]}); "
                    "set MEDSEARCH_ENCODER_BACKEND=torch to use the torch back end"
                ) from exc

    def _load(self) -> None:
        ov = import_openvino("The OpenVINO encoder back end")
        fingerprint = self.source.fingerprint
        model = self.source.torch_model
        version = ov.get_version()
        fp32_dir = self._ensure(
            cache_root(self.model_ref, self.data_dir) / cache_key(fingerprint, "fp32", version),
            manifest_for(fingerprint, "fp32", version),
            (IMAGE_XML, TEXT_XML),
            lambda tmp: convert_towers(model, tmp),
            "fp32",
        )
        image_xml = fp32_dir / IMAGE_XML
        if self.precision in QUANTISED and self.automatic and not self._int8_possible(fingerprint, version):
            self._run_fp32(
                f"auto runs fp32 until the collection has images to calibrate {self.precision} on (and check it "
                "against fp32 with)"
            )
        if self.precision in QUANTISED:
            reduced = self.precision == "int8-reduced"
            int8_dir = self._ensure(
                self._int8_dir(fingerprint, version),
                manifest_for(fingerprint, self.precision, version),
                (IMAGE_XML,),
                lambda tmp: quantize_image_tower(
                    fp32_dir / IMAGE_XML,
                    tmp,
                    self._calibration_frames(),
                    config=self.compile_config(),
                    reduced_range=reduced,
                ),
                self.precision,
            )
            image_xml = self._int8_if_agreeing(int8_dir, image_xml)
        elif self.precision == "int8-weights":
            image_xml = (
                self._ensure(
                    cache_root(self.model_ref, self.data_dir) / cache_key(fingerprint, "int8w", version),
                    manifest_for(fingerprint, "int8-weights", version),
                    (IMAGE_XML,),
                    lambda tmp: compress_image_tower_weights(fp32_dir / IMAGE_XML, tmp),
                    "int8-weights",
                )
                / IMAGE_XML
            )
        core = ov.Core()
        config = self.compile_config()
        self._image = _Tower(core.compile_model(core.read_model(image_xml), "CPU", config))
        self._text = _Tower(core.compile_model(core.read_model(fp32_dir / TEXT_XML), "CPU", config))
        side = image_size(model)
        self._image(np.zeros((1, 3, side, side), np.float32))  # the kernels are chosen at the first inference
        self.runtime = read_back(self._image.compiled)
        self.source.release_weights()  # the IR has its own copy: do not keep two
        log.info(
            "OpenVINO encoder ready: %s, runs %s (%s)",
            f"openvino-{self.precision}",
            self.runtime.summary,
            ", ".join(map(str, self.cache_dirs)),
        )

    def _int8_dir(self, fingerprint: ModelFingerprint, version: str) -> Path:
        kind = "int8r" if self.precision == "int8-reduced" else "int8"
        return cache_root(self.model_ref, self.data_dir, per_collection=True) / cache_key(fingerprint, kind, version)

    def _int8_possible(self, fingerprint: ModelFingerprint, version: str) -> bool:
        """The quantised model is cached, or the collection has frames to calibrate it on (read them once)."""
        expected = manifest_for(fingerprint, self.precision, version)
        if read_valid(self._int8_dir(fingerprint, version), expected, (IMAGE_XML,)):
            return True
        frames = self.calibration(self.source.image_processor, self.calibration_images) if self.calibration else []
        self._frames = frames
        return bool(frames)

    def _run_fp32(self, note: str) -> None:
        """auto's quantised scheme does not run: fp32 does, with the reason kept for stats (a log line, no warning:
        nothing the user asked for is refused)."""
        log.info("%s", note)
        self.note = note
        self.precision = "fp32"
        self.bf16_hint = False

    def _int8_if_agreeing(self, int8_dir: Path, fp32_xml: Path) -> Path:
        """The int8 model when its recorded agreement with fp32 (measured at quantisation on the collection's own
        images) reaches MIN_INT8_COSINE; else fp32, said once (the refusal is recorded: not measured again)."""
        facts = json.loads((int8_dir / MANIFEST).read_text())
        worst = facts.get("min_cosine_vs_fp32")
        if isinstance(worst, int | float) and worst >= MIN_INT8_COSINE:
            return int8_dir / IMAGE_XML
        measured = f"min cosine {worst:.4f}" if isinstance(worst, int | float) else "agreement not measured"
        if self.automatic:
            self._run_fp32(
                f"auto tried {self.precision} and runs fp32: its vectors reached {measured} against fp32 on "
                f"{facts.get('validation_images', 0)} of the collection's images (at least {MIN_INT8_COSINE} kept)"
            )
            return fp32_xml
        self.warning = (
            f"MEDSEARCH_ENCODER_PRECISION={self.precision} was refused for this collection: its vectors reached "
            f"{measured} against fp32 on {facts.get('validation_images', 0)} of its own images (at least "
            f"{MIN_INT8_COSINE} is required), so fp32 runs; set MEDSEARCH_ENCODER_PRECISION=auto to silence this"
        )
        log.warning("%s", self.warning)
        self.precision = "fp32"
        self.bf16_hint = False
        return fp32_xml

    def _ensure(
        self,
        folder: Path,
        expected: dict[str, object],
        files: tuple[str, ...],
        write: Callable[[Path], dict[str, object]],
        what: str,
    ) -> Path:
        if not read_valid(folder, expected, files):
            log.info("converting %s to OpenVINO %s (once; cached in %s)", self.model_ref, what, folder)
            publish(folder, expected, lambda tmp: {"model_id": self.model_ref, **write(tmp)}, files)  # for humans
            self.converted.append(what)
        self.cache_dirs.append(folder)
        return folder

    def _calibration_frames(self) -> list[npt.NDArray[np.float32]]:
        frames = self._frames or (
            self.calibration(self.source.image_processor, self.calibration_images) if self.calibration else []
        )
        self._frames = []  # read for one quantisation: not kept in memory
        if not frames:
            raise ModelLoadError(
                f"MEDSEARCH_ENCODER_PRECISION={self.precision} is calibrated on the collection's own images, and this "
                "collection has none yet (or none could be read): index first with precision auto, bf16 or fp32 (the "
                f"vectors are interchangeable), then switch to {self.precision}"
            )
        return frames

    def compile_config(self) -> dict[str, object]:
        """One stream tuned for latency (a query waits for one image or text); threads as configured."""
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        config["INFERENCE_PRECISION_HINT"] = "bf16" if self.bf16_hint else "f32"
        if self.threads > 0:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    # -- protocol --------------------------------------------------------------------------
    @property
    def fingerprint(self) -> ModelFingerprint:
        self.load()
        return self.source.fingerprint

    @property
    def image_processor(self) -> ImageProcessor:
        self.load()
        return self.source.image_processor

    @property
    def encoded_by(self) -> str:
        """ "openvino-fp32", "openvino-bf16", "openvino-int8" or "openvino-int8-weights": after loading, as int8 may
        have been refused for the collection (recorded with every vector written, like torch's)."""
        self.load()
        return f"openvino-{self.precision}"

    @property
    def runs(self) -> str:
        """What computes the image vectors, read back from the compiled model, e.g. "fp32 on avx2 (OpenVINO, ...)"."""
        self.load()
        assert self.runtime is not None
        kernels = ", ".join(f"{name} x{count}" for name, count in self.runtime.kernels.items())
        note = f"; {self.note}" if self.note else ""
        return f"{self.runtime.summary} (OpenVINO, read back from the compiled model: {kernels}){note}"

    def encode_pixel_values(self, pixel_values: npt.NDArray[np.float32]) -> Vectors:
        """Embed a (N, 3, H, W) batch from `preprocess`; returns (N, width) unit vectors."""
        self.load()
        assert self._image is not None
        return normalise(self._image(pixel_values.astype(np.float32, copy=False)))

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts with the same tokenisation as the torch back end."""
        self.load()
        assert self._text is not None
        return normalise(self._text(self.source.tokenize(texts)))

    def text_scores(self, cosines: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The torch model's own logit scale and bias (read at load), so calibrated scores stay identical."""
        return self.source.text_scores(cosines)
