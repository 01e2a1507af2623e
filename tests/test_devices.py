"""Tests for tfvae.devices: the execution chosen for the device at hand."""

import pytest

from tests.conftest import tiny_config
from tfvae import devices, training


@pytest.mark.parametrize(
    "flags, kind",
    [
        ({"avx512f", "avx512_bf16"}, "cpu_bf16"),
        ({"amx_bf16"}, "cpu_bf16"),
        ({"avx2"}, "cpu"),
    ],
)
def test_the_device_kind_follows_the_cpu_flags(monkeypatch, flags, kind):
    monkeypatch.setattr(devices, "_cpu_flags", lambda: flags)
    assert devices.device_kind() == kind


@pytest.mark.parametrize("kind", sorted(devices.FASTEST))
def test_auto_takes_the_device_fastest_and_explicit_values_are_kept(monkeypatch, kind):
    monkeypatch.setattr(devices, "device_kind", lambda: kind)
    assert devices.resolve("auto", None) == devices.FASTEST[kind]
    explicit = devices.resolve("mixed_float16", not devices.FASTEST[kind].jit_compile)
    assert explicit == devices.Execution(
        "mixed_float16", not devices.FASTEST[kind].jit_compile
    )
    assert devices.resolve("auto", True).jit_compile is True
    assert devices.resolve("float32", None).mixed_precision == "float32"


def test_a_run_records_the_execution_it_resolved(tmp_path, monkeypatch):
    monkeypatch.setitem(
        devices.FASTEST, "cpu", devices.Execution("mixed_bfloat16", jit_compile=False)
    )
    monkeypatch.setattr(devices, "device_kind", lambda: "cpu")
    config = tiny_config(tmp_path, mixed_precision="auto", jit_compile=None, epochs=1)
    metrics = training.train_and_evaluate(config)
    assert metrics["mixed_precision"] == "mixed_bfloat16"
    assert metrics["jit_compile"] is False
