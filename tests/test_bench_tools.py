"""The benchmarks' own tools: synthetic collections grown without duplicates, route selection, the CPU line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.collection import Collection

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))  # the bench scripts import each other as top-level modules

import api_load  # noqa: E402
import machine  # noqa: E402
import synthetic  # noqa: E402
from api_load_queries import ROUTE_NAMES, make_routes  # noqa: E402


def stored_vectors(collection: Collection) -> np.ndarray:
    """Every stored vector, in id order."""
    return np.concatenate([vecs for _, vecs in collection.catalog.iter_vectors()])


@pytest.mark.backends("sqlite-faiss")
def test_growing_in_two_runs_adds_no_duplicate_vectors(collection: Collection) -> None:
    """The 1M figures were made by a second run that reseeded the generator and re-inserted the first run's
    100,000 vectors; a second grow must continue the stream instead."""
    width = collection.require_index().width
    centres = synthetic.cluster_centres(0, 8, width)
    api_load.grow(collection, 300, 0, centres)  # first run
    api_load.grow(collection, 700, 0, synthetic.cluster_centres(0, 8, width))  # second run, generator made anew
    vectors = stored_vectors(collection)
    assert vectors.shape == (700, width)
    assert synthetic.exact_duplicates(vectors) == 0
    assert collection.require_index().ntotal == 700
    # the rows are those of one run straight to 700, and their dates come from the same stream
    assert np.array_equal(vectors, synthetic.synthetic_rows(0, 0, 700, centres)[0])
    # the route names the benchmark selects from are the ones it runs
    assert [route.name for route in make_routes(collection, collection.catalog.all_ids(), 10)] == list(ROUTE_NAMES)


def test_stream_does_not_depend_on_how_it_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps that cross block boundaries give the rows of one step, and no row repeats another."""
    monkeypatch.setattr(synthetic, "BLOCK", 64)
    centres = synthetic.cluster_centres(3, 4, 16)
    whole, whole_days = synthetic.synthetic_rows(3, 0, 500, centres)
    parts = [synthetic.synthetic_rows(3, start, n, centres) for start, n in ((0, 100), (100, 1), (101, 399))]
    assert np.array_equal(np.concatenate([v for v, _ in parts]), whole)
    assert np.array_equal(np.concatenate([d for _, d in parts]), whole_days)
    assert synthetic.exact_duplicates(whole) == 0
    assert synthetic.exact_duplicates(np.concatenate([whole, whole[:10]])) == 10
    assert np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    other_seed = synthetic.synthetic_rows(4, 0, 500, synthetic.cluster_centres(4, 4, 16))[0]
    assert synthetic.exact_duplicates(np.concatenate([whole, other_seed])) == 0


def test_route_selection_takes_names_with_commas_and_numbers() -> None:
    assert "text, new each time" in ROUTE_NAMES
    args = api_load.parse_args(["--route", "text, new each time", "--route", "1"])
    assert args.route == ["search-by-id", "text, new each time"]
    assert api_load.parse_args([]).route == []  # all routes


def test_route_selection_refuses_an_unknown_route(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        api_load.parse_args(["--route", "text"])
    assert exit_info.value.code == 2
    assert "'text, new each time'" in capsys.readouterr().err


def test_cpu_line_names_the_model_and_the_relevant_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    )
    line = machine.cpu_line(cpuinfo)
    assert line.startswith("CPU: Intel(R) Xeon(R) Platinum 8480+, ")
    assert line.endswith("flags avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8")
    assert machine.cpu_facts(cpuinfo)["cpu_flags"] == [
        "avx2",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_bf16",
        "amx_int8",
    ]
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t: fpu avx2\n")
    assert machine.cpu_line(cpuinfo).endswith("flags avx2 (no amx)")
    assert machine.cpu_flags(tmp_path / "missing") == []


def test_the_cpu_line_names_an_instruction_set_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/encoder.py --isa avx2 measures an AVX2-only server here: the line says the kernels were capped."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t: fpu avx2 avx512f avx512_bf16\n")
    for name in machine.CAPS:
        monkeypatch.delenv(name, raising=False)
    assert "capped" not in machine.cpu_line(cpuinfo)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("OV_CPU_MAX_ISA", "AVX2")
    line = machine.cpu_line(cpuinfo)
    assert line.endswith(
        "flags avx2 avx512f avx512_bf16 (no amx); kernels capped by ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2"
    )


def test_every_benchmark_prints_the_cpu_line() -> None:
    """Figures without the CPU they ran on cannot be compared (issue 22): every runnable bench script prints it."""
    scripts = [p for p in BENCH.glob("*.py") if '__name__ == "__main__"' in p.read_text()]
    assert len(scripts) >= 15
    assert [p.name for p in scripts if "cpu_line(" not in p.read_text()] == []


def test_a_stand_in_takes_a_text_tower_of_any_size(tmp_path: Path) -> None:
    """bench/text_encoder.py times MedSigLIP's full-size text tower on a stand-in built with `text`: the sizes
    reach the saved model, it loads with the Auto classes, and its texts embed to unit vectors of the image width."""
    from retrieval.encoders.medsiglip import MedSigLIPEncoder
    from retrieval.encoders.standin import TextTower, build_standin_model

    tower = TextTower(width=48, layers=3, heads=4, intermediate=96)
    model_dir = build_standin_model(tmp_path / "model", width=40, layers=1, heads=2, text=tower)
    encoder = MedSigLIPEncoder(str(model_dir), "cpu", "fp32")
    encoder.load()
    text_config = encoder.torch_model.config.text_config
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    assert tuple(getattr(text_config, name) for name in sizes) == tuple(tower)
    vectors = encoder.encode_texts(["right lower lobe consolidation", "no acute abnormality"])
    assert vectors.shape == (2, 40)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
