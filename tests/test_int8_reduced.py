"""int8-reduced on an AVX2-only CPU (played here by the ISA cap, in a subprocess): auto picks it, the overflow fix
keeps the int8 kernels from saturating, and the collection's own images decide whether it runs or fp32 does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retrieval.encoders.standin import build_standin_model

AVX2_CAP = {"OV_CPU_MAX_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}  # as bench/encoder.py --isa avx2 sets them

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from retrieval.encoders import ov_encoder
    from retrieval.encoders.factory import build_encoder, choose_encoder
    from retrieval.encoders.ov_convert import quantize_image_tower
    from retrieval.prepare import prepare_bytes
    from retrieval.settings import Settings

    model, work = sys.argv[1], Path(sys.argv[2])
    def settings(name):
        return Settings(data_dir=work / name, model=model, device="cpu", encoder_backend="openvino")
    out = {"auto": choose_encoder(settings("a")).precision}
    empty = build_encoder(settings("empty"), calibration=lambda processor, limit: [])
    out["empty"] = [empty.encoded_by, empty.note, empty.warning]
    samples = sorted(Path("data/samples").glob("*.dcm"))
    frames = [f for p in samples for f in prepare_bytes(p.read_bytes(), empty.image_processor).pixel_values]
    gated = build_encoder(settings("c"), calibration=lambda processor, limit: frames[:limit])
    out["gated"] = [gated.encoded_by, gated.runtime.summary, gated.note, gated.warning]
    manifest = json.loads(next((work / "c").rglob("*-int8r-*/manifest.json")).read_text())
    out["manifest"] = manifest
    fp32_xml = next(Path(model).glob(".medsearch-openvino/*-fp32-*/image.xml"))
    plain = work / "plain"; plain.mkdir()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    out["plain"] = quantize_image_tower(fp32_xml, plain, frames, config=config)["min_cosine_vs_fp32"]
    ov_encoder.MIN_INT8_COSINE = 0.9  # a bar this stand-in passes: int8 then runs, read back from its kernels
    kept = build_encoder(settings("c"), calibration=lambda processor, limit: frames[:limit])
    out["kept"] = [kept.encoded_by, kept.runtime.precision, kept.runtime.isa, kept.converted, kept.note]
    print(json.dumps(out))
    """
)


@pytest.mark.slow  # a subprocess converting and quantising the stand-in twice
def test_auto_runs_int8_reduced_on_avx2_only_where_it_agrees_with_fp32(tmp_path: Path) -> None:
    model = build_standin_model(tmp_path / "model")
    env = {**os.environ, **AVX2_CAP}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model), str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["auto"] == "int8-reduced"  # what auto picks on an AVX2-only CPU (NNCF installed)
    # a collection without images yet: fp32, said in stats, no warning (nothing the user asked for is refused)
    assert out["empty"][0] == "openvino-fp32" and "until the collection has images" in out["empty"][1]
    assert out["empty"][2] is None
    manifest = out["manifest"]
    assert manifest["reduced_range"] is True and manifest["validation_images"] == manifest["calibration_images"] >= 10
    # the overflow fix is what keeps AVX2's int8 kernels from saturating: same frames, same kernels, full range
    assert manifest["min_cosine_vs_fp32"] > out["plain"] + 0.02, (manifest, out["plain"])
    # the 32-wide random stand-in stays below 0.999 even so: the gate refuses it and fp32 runs, said in `runs`
    assert manifest["min_cosine_vs_fp32"] < 0.999
    encoded_by, summary, note, warning = out["gated"]
    assert encoded_by == "openvino-fp32" and summary == "fp32 on avx2" and warning is None
    assert note.startswith("auto tried int8-reduced and runs fp32") and f"{manifest['min_cosine_vs_fp32']:.4f}" in note
    # where the agreement reaches the bar int8 runs, on AVX2 kernels, from the cached quantisation
    assert out["kept"] == ["openvino-int8-reduced", "int8", "avx2", [], None]
