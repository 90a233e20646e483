"""The speed benchmark runs end to end at its smallest sizes (no timing assertions: only that every row is produced,
with positive numbers) and writes its device's section of a markdown file without touching the other sections."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    from benchmarks import benchmark_speed

    return benchmark_speed


def run_tiny(bench, lines):
    # Row 6 (GPU throughput, MFU, data pipeline) runs on the CPU here, without torch.compile (minutes on the CPU).
    return bench.run_benchmarks(device="cpu", tiny=True, repeats=1, gpu_rows=True, compile=False, workers=0,
                                log=lines.append)


def test_every_row_runs_at_the_smallest_size(bench, tmp_path):
    lines: list[str] = []
    threads = torch.get_num_threads()
    # One thread: on a shared 2-core machine, OpenMP threads spinning beside other processes make the run 10x slower.
    torch.set_num_threads(1)
    try:
        results = run_tiny(bench, lines)
    finally:
        torch.set_num_threads(threads)
    rows = {result.row for result in results}
    assert rows == {"1", "2a", "2b", "3", "4", "5a", "5b", "6a", "6b", "6c", "7"}
    from hf_dimml.methods import METHODS

    assert [r.benchmark.split("`")[1] for r in results if r.row == "7"] == list(METHODS)  # every method vs joint
    assert len([r for r in results if r.row == "6a"]) == 2  # channels_last off / on
    for result in results:
        assert result.package and result.values, result
        for name, value in result.values.items():
            if name == "mfu":  # no bf16 peak for a CPU
                continue
            assert math.isfinite(value) and value > 0, (result.row, name, value)
        if result.ratio is not None and result.row != "5b":  # 5b's ratio is an overhead: may be negative
            assert result.ratio > 0
        assert result.holds is None  # tiny sizes: targets stated, not evaluated
    assert any(line.startswith("[1]") for line in lines) and any(line.startswith("[6b]") for line in lines)

    info = bench.machine_info(torch.device("cpu"))
    assert {"cpu_model", "cpu_cores", "bf16_flags", "torch"} <= set(info)
    assert set(info["bf16_flags"]) >= {"avx512_bf16", "amx_bf16"}
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\nintro\n\n<!-- cuda -->\nGPU TABLE\n<!-- /cuda -->\n")
    section = bench.render_section("cpu", "python benchmarks/benchmark_speed.py --quick", info, results, 1.0,
                                   [0.0, 0.0, 0.0])
    bench.write_section(output, "cpu", section)
    bench.write_section(output, "cpu", section)  # replaced, not appended
    text = output.read_text()
    assert text.count("<!-- cpu -->") == 1 and text.count("<!-- /cpu -->") == 1
    assert "GPU TABLE" in text and "intro" in text
    assert "| 1 | DUC loss" in text and "avx512_bf16" in text


def test_naive_baselines_compute_what_the_package_computes(bench):
    from hf_dimml.losses import duc_loss, effective_dimension_accuracy

    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(12, 32, generator=generator, requires_grad=True) for _ in range(2)]
    mask = bench.duc_masks(32, 9)
    assert int((mask[0] & ~mask[1]).sum()) == 9 and int((mask[1] & ~mask[0]).sum()) == 9
    fast, slow = duc_loss(features, mask, 5.0), bench.naive_duc(features, mask, 5.0)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    for fast_grad, slow_grad in zip(torch.autograd.grad(fast, features), torch.autograd.grad(slow, features)):
        torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-5, atol=1e-6)

    values, labels = bench.synthetic_features(300, 24, 6)
    torch.testing.assert_close(effective_dimension_accuracy(values, labels, 6),
                               bench.naive_effective_dimension_accuracy(values, labels, 6), rtol=0, atol=1 / 300)
