"""The encoder precision that actually runs: read back from the compiled model, said once when not the requested one,
int8 kept only where it agreed with fp32 on the collection's images; other hosts played via retrieval/cpu.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from retrieval import cpu
from retrieval.collection import Collection
from retrieval.encoders import factory
from retrieval.encoders.factory import build_encoder, choose_encoder
from retrieval.encoders.ov_cache import MANIFEST
from retrieval.encoders.ov_convert import MIN_INT8_COSINE
from retrieval.encoders.ov_encoder import OpenVINOEncoder
from retrieval.encoders.ov_runtime import isa_of, precision_of
from retrieval.settings import Settings
from retrieval.vocabulary import stats_report

AVX2_CAP = {"OV_CPU_MAX_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
AVX2_ONLY = frozenset({"avx2"})
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})

# two matrix products with a dynamic batch, as the image tower has; prints what runs for each precision hint
READ_BACK = textwrap.dedent(
    """
    import json, numpy as np, openvino as ov, openvino.opset13 as ops
    from retrieval.encoders.ov_runtime import read_back
    rng = np.random.default_rng(0)
    x = ops.parameter([-1, 64, 256], ov.Type.f32); h = x
    for _ in range(2):
        h = ops.matmul(h, ops.constant(rng.standard_normal((256, 256)).astype(np.float32) / 16), False, True)
    model, found = ov.Model([h], [x]), {}
    for hint in ("f32", "bf16"):
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        before = read_back(compiled).precision
        compiled.create_infer_request().infer({0: np.zeros((1, 64, 256), np.float32)})
        facts = read_back(compiled)
        found[hint] = {"before": before, "precision": facts.precision, "hint": facts.hint, "kernels": facts.kernels}
    print(json.dumps(found))
    """
)


def _read_back(extra_env: dict[str, str]) -> dict[str, dict[str, object]]:
    env = {**os.environ, **extra_env}
    for name in AVX2_CAP.keys() - extra_env.keys():  # this machine as it is, whatever the caller's environment
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", READ_BACK], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_precision_is_read_back_from_the_compiled_model_and_the_avx2_cap_holds() -> None:
    """A bf16 hint runs bf16 only where the CPU computes bf16; capped at AVX2 (OpenVINO's and oneDNN's caps
    together, as bench/encoder.py --isa avx2 sets them) the same hint runs fp32, and the read-back says so."""
    here = _read_back({})
    assert here["f32"]["precision"] == "fp32"
    assert here["f32"]["before"] == "unknown"  # dynamic batch: kernels are chosen at the first inference
    native_bf16 = cpu.has_bf16(cpu.cpu_features())
    assert here["bf16"]["precision"] == ("bf16" if native_bf16 else "fp32"), here
    capped = _read_back(AVX2_CAP)
    assert capped["bf16"]["precision"] == "fp32" and capped["bf16"]["hint"] == "f32", capped
    assert not any("avx512" in kernel for kernel in capped["bf16"]["kernels"]), capped  # type: ignore[union-attr]


def test_kernel_names_give_precision_and_instruction_set() -> None:
    assert precision_of("brgemm_avx2_f32") == "fp32" and isa_of("brgemm_avx2_f32") == "avx2"
    assert precision_of("brgemm_avx512_bf16") == "bf16" and isa_of("brgemm_avx512_amx_bf16") == "amx"
    assert precision_of("jit_gemm_I8") == "int8" and isa_of("jit_gemm_I8") == "unknown"
    assert precision_of("undef_f32") == "unknown"


def test_an_isa_cap_makes_the_product_see_a_smaller_cpu() -> None:
    assert cpu.capped(SAPPHIRE_RAPIDS, {"ONEDNN_MAX_CPU_ISA": "AVX2"}) == AVX2_ONLY
    assert cpu.capped(SAPPHIRE_RAPIDS, {"OV_CPU_MAX_ISA": "avx512_core_vnni"}) == {"avx2", "avx512f", "avx512_vnni"}
    assert cpu.capped(SAPPHIRE_RAPIDS, {}) == SAPPHIRE_RAPIDS


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path, model=str(tmp_path / "model"), device="cpu", **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("requested", ["bf16", "int8"])
def test_a_precision_the_cpu_cannot_run_is_said_once_and_in_stats(
    requested: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cpu, "cpu_features", lambda: AVX2_ONLY)
    monkeypatch.setattr(factory, "_WARNED", set())
    settings = _settings(tmp_path, encoder_backend="openvino", encoder_precision=requested)
    choice = choose_encoder(settings)
    assert choice.precision == "fp32" and choice.warning is not None  # not silently replaced, not refused
    assert f"MEDSEARCH_ENCODER_PRECISION={requested} needs a CPU with" in choice.warning
    assert "this one has: avx2" in choice.warning and "so fp32 runs" in choice.warning
    with caplog.at_level(logging.WARNING, logger="retrieval.encoders.factory"):
        for _ in range(3):  # each process build (indexing, serving, stats) would log it again without the guard
            encoder = build_encoder(settings)
    assert isinstance(encoder, OpenVINOEncoder) and encoder.precision == "fp32" and encoder.warning == choice.warning
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [choice.warning]
    collection = Collection(settings)
    try:
        report = stats_report(collection)
    finally:
        collection.close()
    assert report["encoder"] == "openvino-fp32" and report["encoder_warning"] == choice.warning
    assert report["encoder_runs"].startswith("not loaded yet")


def test_native_precisions_run_without_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "cpu_features", lambda: SAPPHIRE_RAPIDS)
    for requested, runs in (("auto", "bf16"), ("bf16", "bf16"), ("int8", "int8"), ("int8-weights", "int8-weights")):
        choice = choose_encoder(_settings(tmp_path, encoder_backend="openvino", encoder_precision=requested))
        assert (choice.precision, choice.warning) == (runs, None)
    monkeypatch.setattr(cpu, "cpu_features", lambda: AVX2_ONLY)
    auto = choose_encoder(_settings(tmp_path, encoder_backend="openvino"))
    # int8 with reduced-range weights, gated on the collection's images (tests/test_int8_reduced.py); no warning
    assert (auto.precision, auto.warning, auto.automatic) == ("int8-reduced", None, True)
    reduced = choose_encoder(_settings(tmp_path, encoder_backend="openvino", encoder_precision="int8-reduced"))
    assert (reduced.precision, reduced.warning, reduced.automatic) == ("int8-reduced", None, False)
    # nobody asked auto for the one-off quantisation: it calibrates on fewer images than an explicit request
    built = {p: build_encoder(_settings(tmp_path, encoder_precision=p)) for p in ("auto", "int8-reduced")}
    assert [(e.automatic, e.calibration_images) for e in built.values()] == [(True, 32), (False, 300)]  # type: ignore[attr-defined]
    monkeypatch.setattr(factory, "nncf_installed", lambda: False)  # no quantiser: fp32
    assert choose_encoder(_settings(tmp_path, encoder_backend="openvino")).precision == "fp32"


@pytest.mark.parametrize("worst", [0.9995, 0.9302, None])
def test_int8_is_kept_only_where_it_agreed_with_fp32_on_the_collection(
    worst: float | None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The agreement measured at quantisation (recorded in the int8 cache's manifest) decides, once per load."""
    int8_dir = tmp_path / "int8"
    int8_dir.mkdir()
    facts: dict[str, object] = {"validation_images": 32}
    if worst is not None:
        facts["min_cosine_vs_fp32"] = worst
    (int8_dir / MANIFEST).write_text(json.dumps(facts))
    encoder = OpenVINOEncoder(str(tmp_path / "model"), tmp_path, "int8", bf16_hint=True)
    fp32_xml = tmp_path / "fp32" / "image.xml"
    with caplog.at_level(logging.WARNING):
        chosen = encoder._int8_if_agreeing(int8_dir, fp32_xml)
    if worst is not None and worst >= MIN_INT8_COSINE:
        assert chosen == int8_dir / "image.xml" and encoder.precision == "int8" and encoder.warning is None
        assert not caplog.records
        return
    assert chosen == fp32_xml and encoder.precision == "fp32" and not encoder.bf16_hint
    assert encoder.warning is not None and "so fp32 runs" in encoder.warning
    assert ("min cosine 0.9302" if worst else "agreement not measured") in encoder.warning
    assert [r.getMessage() for r in caplog.records] == [encoder.warning]


def test_the_agreement_is_measured_on_the_frames_given() -> None:
    """min_cosine compares two compiled models output by output: identical models agree, a perturbed one not."""
    import openvino as ov
    import openvino.opset13 as ops

    from retrieval.encoders.ov_convert import min_cosine

    rng = np.random.default_rng(1)
    weights = rng.standard_normal((16, 16)).astype(np.float32)

    def model(w: np.ndarray) -> ov.Model:
        x = ops.parameter([-1, 16], ov.Type.f32)
        return ov.Model([ops.matmul(x, ops.constant(w), False, True)], [x])

    frames = rng.standard_normal((4, 16)).astype(np.float32)
    fp32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the candidate runs as configured (OpenVINO's default may be bf16)
    assert min_cosine(model(weights), model(weights), frames, fp32) == pytest.approx(1.0, abs=1e-6)
    noisy = weights + rng.standard_normal(weights.shape).astype(np.float32)
    assert min_cosine(model(weights), model(noisy), frames, fp32) < 0.99
