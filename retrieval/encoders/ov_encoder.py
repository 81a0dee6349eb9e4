"""MedSigLIP on OpenVINO: the torch model is loaded once to fingerprint and convert it, then runs as cached IR."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from retrieval.encoders.base import ModelFingerprint, Vectors
from retrieval.encoders.medsiglip import MedSigLIPEncoder, normalise
from retrieval.encoders.ov_cache import cache_key, cache_root, manifest_for, publish, read_valid
from retrieval.encoders.ov_convert import IMAGE_XML, TEXT_XML, convert_towers, quantize_image_tower
from retrieval.errors import MedsearchError, ModelLoadError
from retrieval.imaging.preprocess import ImageProcessor
from retrieval.optional import import_openvino

log = logging.getLogger(__name__)
# (processor, at most this many) -> frames preprocessed exactly as the collection indexed them
CalibrationSource = Callable[[ImageProcessor, int], list[npt.NDArray[np.float32]]]
PRECISIONS = ("fp32", "bf16", "int8")


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
        self.source = MedSigLIPEncoder(model_ref, "cpu", "fp32")
        self.converted: list[str] = []  # what this load had to convert (empty when the disk cache served it)
        self.cache_dirs: list[Path] = []
        self._lock = threading.Lock()
        self._image: _Tower | None = None
        self._text: _Tower | None = None

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
        if self.precision == "int8":
            int8_dir = self._ensure(
                cache_root(self.model_ref, self.data_dir, per_collection=True)
                / cache_key(fingerprint, "int8", version),
                manifest_for(fingerprint, "int8", version),
                (IMAGE_XML,),
                lambda tmp: quantize_image_tower(fp32_dir / IMAGE_XML, tmp, self._calibration_frames()),
                "int8",
            )
            image_xml = int8_dir / IMAGE_XML
        core = ov.Core()
        config = self.compile_config()
        self._image = _Tower(core.compile_model(core.read_model(image_xml), "CPU", config))
        self._text = _Tower(core.compile_model(core.read_model(fp32_dir / TEXT_XML), "CPU", config))
        self.source.release_weights()  # the IR has its own copy: do not keep two
        log.info("OpenVINO encoder ready: %s (%s)", self.encoded_by, ", ".join(map(str, self.cache_dirs)))

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
        frames = self.calibration(self.source.image_processor, self.calibration_images) if self.calibration else []
        if not frames:
            raise ModelLoadError(
                "MEDSEARCH_ENCODER_PRECISION=int8 is calibrated on the collection's own images, and this collection "
                "has none yet (or none could be read): index first with precision auto, bf16 or fp32 (the vectors "
                "are interchangeable), then switch to int8"
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
        """ "openvino-fp32", "openvino-bf16" or "openvino-int8"."""
        return f"openvino-{self.precision}"

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
