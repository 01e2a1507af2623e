"""Tests for tfvae.devices: the execution chosen for the device at hand."""

import pytest

from tests.conftest import tiny_config
from tfvae import devices, networks, training


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


@pytest.mark.parametrize("kind", devices.DEVICE_KINDS)
@pytest.mark.parametrize("network", [*networks.NETWORKS, devices.TABLE])
def test_auto_takes_the_fastest_and_explicit_values_are_kept(
    monkeypatch, kind, network
):
    monkeypatch.setattr(devices, "device_kind", lambda: kind)
    fastest = devices.fastest(kind, network)
    assert devices.resolve("auto", None, network) == fastest
    explicit = devices.resolve("mixed_float16", not fastest.jit_compile, network)
    assert explicit == devices.Execution("mixed_float16", not fastest.jit_compile)
    assert devices.resolve("auto", True, network).jit_compile is True
    assert devices.resolve("float32", None, network).mixed_precision == "float32"


@pytest.mark.parametrize("kind", devices.DEVICE_KINDS)
def test_a_table_compiles_with_xla_on_any_device(kind):
    # Its networks are dense and its step trains on rows, with no lookups.
    assert devices.fastest(kind, devices.TABLE).jit_compile is True


def test_an_unknown_device_kind_is_refused_naming_it():
    with pytest.raises(ValueError, match="Received: kind='tpu'"):
        devices.fastest("tpu", "mlp")


@pytest.mark.parametrize("kind", ["cpu", "cpu_bf16"])
def test_a_cpu_compiles_the_mlp_but_not_convolutions(monkeypatch, kind):
    # Measured (README, "Performance"): XLA is 1.2x faster for the MLP's
    # step on this CPU and 1.3-2.8x slower for convolutional ones.
    monkeypatch.setattr(devices, "device_kind", lambda: kind)
    assert devices.resolve("auto", None, "mlp").jit_compile is True
    assert devices.resolve("auto", None, "conv").jit_compile is False


def test_a_run_records_the_execution_it_resolved(tmp_path, monkeypatch):
    monkeypatch.setattr(
        devices,
        "fastest",
        lambda kind, network: devices.Execution("mixed_bfloat16", jit_compile=False),
    )
    monkeypatch.setattr(devices, "device_kind", lambda: "cpu")
    config = tiny_config(tmp_path, mixed_precision="auto", jit_compile=None, epochs=1)
    metrics = training.train_and_evaluate(config)
    assert metrics["mixed_precision"] == "mixed_bfloat16"
    assert metrics["jit_compile"] is False
