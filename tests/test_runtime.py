"""Device/precision resolution and the runtime: OOM retry, explicit tiles never overridden, allocator tuning."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from defocus_cli import devices, runtime
from defocus_cli.cli.exit_codes import exit_code
from defocus_cli.errors import DeviceError, UsageError


class _Engine(nn.Module):
    """Stand-in engine: a 3x3 conv (receptive field 1) with the engine-contract attributes."""

    multiple_of = 8
    receptive_field = 4
    safe_precisions = ("fp32", "bf16")

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


# ---------------------------------------------------------------- devices


def test_cuda_requested_but_absent_is_device_error_exit_4(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_gpu(monkeypatch)
    for req in ("cuda", "cuda:0", "CUDA:1"):
        with pytest.raises(DeviceError, match="--device cpu") as ei:
            devices.resolve_device(req)
        assert exit_code(ei.value) == 4


def test_mps_requested_but_absent_is_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_gpu(monkeypatch)
    with pytest.raises(DeviceError):
        devices.resolve_device("mps")


def test_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match="only 1 CUDA device"):
        devices.resolve_device("cuda:3")
    assert devices.resolve_device("cuda:0") == torch.device("cuda", 0)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _no_gpu(monkeypatch)
    with caplog.at_level(logging.INFO, logger="defocus_cli.devices"):
        assert devices.resolve_device("auto") == torch.device("cpu")
    assert "using cpu" in caplog.text
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    assert devices.resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cpu:0", "mps:1", ""])
def test_bad_device_strings_are_usage_errors(bad: str) -> None:
    if bad == "":  # empty means auto
        assert isinstance(devices.resolve_device(bad), torch.device)
        return
    with pytest.raises(UsageError):
        devices.resolve_device(bad)


def test_cpu_always_resolves() -> None:
    assert devices.resolve_device("cpu") == torch.device("cpu")


# ---------------------------------------------------------------- precision


def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = _Engine()
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.resolve_precision("auto", eng, "cpu") == "bf16"
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.resolve_precision("auto", eng, "cpu") == "fp32"
    eng_fp32_only = _Engine()
    eng_fp32_only.safe_precisions = ("fp32",)  # type: ignore[misc]
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.resolve_precision("auto", eng_fp32_only, "cpu") == "fp32"


def test_auto_precision_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    eng = _Engine()
    eng.safe_precisions = ("fp32", "bf16", "fp16")  # type: ignore[misc]
    assert devices.resolve_precision("auto", eng, torch.device("cuda", 0)) == "fp16"
    eng.safe_precisions = ("fp32", "bf16")  # type: ignore[misc]
    assert devices.resolve_precision("auto", eng, torch.device("cuda", 0)) == "bf16"
    eng.safe_precisions = ("fp32",)  # type: ignore[misc]
    assert devices.resolve_precision("auto", eng, torch.device("cuda", 0)) == "fp32"
    assert devices.resolve_precision("auto", eng, "mps") == "fp32"


def test_explicit_unsafe_precision_is_refused() -> None:
    eng = _Engine()  # safe: fp32, bf16
    with pytest.raises(UsageError, match="not validated"):
        devices.resolve_precision("fp16", eng, "cpu")
    assert devices.resolve_precision("fp32", eng, "cpu") == "fp32"
    assert devices.resolve_precision("BF16", eng, "cpu") == "bf16"
    with pytest.raises(UsageError):
        devices.resolve_precision("int8", eng, "cpu")


def test_fp16_on_cpu_is_refused_even_if_safe() -> None:
    eng = _Engine()
    eng.safe_precisions = ("fp32", "fp16")  # type: ignore[misc]
    with pytest.raises(UsageError, match="GPU"):
        devices.resolve_precision("fp16", eng, "cpu")


def test_engine_without_attribute_is_fp32_only() -> None:
    with pytest.raises(UsageError):
        devices.resolve_precision("bf16", nn.Identity(), "cpu")
    assert devices.resolve_precision("auto", nn.Identity(), "cpu") == "fp32"


# ---------------------------------------------------------------- allocator, threads, budget


def test_tune_allocator_is_idempotent() -> None:
    first = runtime.tune_allocator()
    assert isinstance(first, bool)
    assert runtime.tune_allocator() is first
    assert runtime.allocator_tuned() is first


def test_trim_threshold_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEFOCUS_MALLOC_TRIM_MB", raising=False)
    assert runtime._trim_threshold() == -1  # default: never trim
    monkeypatch.setenv("DEFOCUS_MALLOC_TRIM_MB", "512")
    assert runtime._trim_threshold() == 512 * 2**20
    monkeypatch.setenv("DEFOCUS_MALLOC_TRIM_MB", "100000")
    assert runtime._trim_threshold() == 2047 * 2**20  # mallopt takes a C int
    monkeypatch.setenv("DEFOCUS_MALLOC_TRIM_MB", "lots")
    assert runtime._trim_threshold() == -1


_KEEP_AND_RELEASE = """
import os, torch
from defocus_cli import runtime
def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
assert runtime.tune_allocator()
base = rss()
x = torch.ones(64 * 2**20)  # 256 MiB
del x
kept = rss() - base
released = runtime.release_memory()
print(f"{kept:.0f} {int(released)} {rss() - base:.0f}")
"""


@pytest.mark.skipif(runtime._libc() is None, reason="the allocator tuning is glibc-only (mallopt/malloc_trim)")
def test_tuned_allocator_keeps_freed_memory_until_released() -> None:
    """With the tuning, a freed 256 MiB tensor stays in the heap (no re-faulting for the next tile);
    release_memory hands it back."""
    env = {**os.environ, "DEFOCUS_MALLOC_TUNING": "1", "DEFOCUS_MALLOC_TRIM_MB": "", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _KEEP_AND_RELEASE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    kept, released, after = float(out[0]), out[1], float(out[2])
    assert kept > 200, kept
    assert released == "1" and after < 50, (released, after)


def test_auto_tile_whole_image_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = _Engine()
    monkeypatch.setattr(runtime, "memory_budget", lambda *a, **k: 10**12)
    assert runtime.auto_tile(eng, 1120, 1680, torch.device("cpu"), "fp32", 4) == 0
    monkeypatch.setattr(runtime, "memory_budget", lambda *a, **k: runtime.DEFAULT_BYTES_PER_PIXEL * 300 * 300)
    th, tw = runtime.auto_tile(eng, 1120, 1680, torch.device("cpu"), "fp32", 4)
    assert th % 8 == 0 and tw % 8 == 0 and th * tw <= 300 * 300 and min(th, tw) >= runtime.min_tile(4, 8)
    # reduced precision needs less memory per pixel: larger tiles for the same budget
    th2, tw2 = runtime.auto_tile(eng, 1120, 1680, torch.device("cpu"), "bf16", 4)
    assert th2 * tw2 > th * tw
    monkeypatch.setattr(runtime, "memory_budget", lambda *a, **k: 1)
    assert runtime.auto_tile(eng, 1120, 1680, torch.device("cpu"), "fp32", 4) == runtime.min_tile(4, 8)


def test_cpu_budget_respects_cap_and_image_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFOCUS_MAX_MEMORY_GB", "2")
    monkeypatch.setattr(runtime, "mem_available_bytes", lambda: 100 * 1024**3)
    small = runtime.memory_budget(torch.device("cpu"), 1000 * 1000)
    big = runtime.memory_budget(torch.device("cpu"), 24_000_000)
    assert 0 <= big < small < 2 * 1024**3
    monkeypatch.setattr(runtime, "mem_available_bytes", lambda: 1024**3)
    assert runtime.memory_budget(torch.device("cpu"), 1000) < 0.71 * 1024**3


def test_next_smaller_tile_halves_down_to_minimum() -> None:
    seq = [0]
    while (n := runtime.next_smaller_tile(seq[-1], 1000, 1500, 16, 8)) is not None:
        assert n % 8 == 0
        seq.append(n)
    assert seq[1] == 752 and seq[-1] == runtime.min_tile(16, 8)
    assert all(a > b for a, b in zip(seq[1:], seq[2:]))
    assert runtime.next_smaller_tile((400, 900), 1000, 1500, 16, 8) == (200, 448)
    assert runtime.next_smaller_tile((96, 96), 1000, 1500, 16, 8) is None


@pytest.mark.parametrize(
    "exc,expected",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes"), True),
        (MemoryError(), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_is_oom(exc: BaseException, expected: bool) -> None:
    assert runtime.is_oom(exc) is expected


# ---------------------------------------------------------------- run_engine


def _oom_above(
    limit_pixels: int, seen: list[tuple[int, int]], use_runtime_error: bool = False
) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    def fn(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[-2:]))
        if t.shape[-1] * t.shape[-2] > limit_pixels:
            if use_runtime_error:
                raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return module(t)

    return fn


@pytest.mark.parametrize("use_runtime_error", [False, True])
def test_oom_with_auto_tile_halves_and_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, use_runtime_error: bool
) -> None:
    monkeypatch.setattr(runtime, "memory_budget", lambda *a, **k: 10**12)  # auto picks the whole image
    eng = _Engine()
    x = torch.rand(1, 3, 200, 272)
    seen: list[tuple[int, int]] = []
    info: dict = {}
    with caplog.at_level(logging.WARNING, logger="defocus_cli.runtime"):
        y = runtime.run_engine(
            eng, x, device="cpu", tile="auto", fn=_oom_above(80 * 80, seen, use_runtime_error), info=info
        )
    with torch.inference_mode():
        ref = eng(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float((y - ref).abs().max()) < 1e-5
    assert info["oom_retries"] == 2 and info["tile"] == runtime.min_tile(4, 8) and info["tiles"] > 1
    assert "retrying with tile 136" in caplog.text
    assert seen[0] == (200, 272)  # first try: the whole (padded) image


def test_explicit_tile_is_never_overridden() -> None:
    eng = _Engine()
    x = torch.rand(1, 3, 100, 140)
    seen: list[tuple[int, int]] = []
    with pytest.raises(DeviceError, match="--tile") as ei:
        runtime.run_engine(eng, x, device="cpu", tile=64, fn=_oom_above(32 * 32, seen))
    assert exit_code(ei.value) == 4
    assert seen and all(max(s) <= 64 and max(s) > 32 for s in seen), "no smaller tile may be tried"
    seen.clear()
    with pytest.raises(DeviceError, match="whole image"):
        runtime.run_engine(eng, x, device="cpu", tile=0, fn=_oom_above(32 * 32, seen))
    assert seen == [(104, 144)]


def test_explicit_tile_is_used_and_matches_whole() -> None:
    eng = _Engine()
    x = torch.rand(1, 3, 61, 75)
    seen: list[tuple[int, int]] = []
    info: dict = {}
    y = runtime.run_engine(eng, x, device="cpu", tile=32, fn=_oom_above(10**9, seen), info=info)
    assert all(max(s) <= 32 for s in seen) and len(seen) > 1
    assert info["tile"] == 32 and info["overlap"] == eng.receptive_field
    with torch.inference_mode():
        ref = eng(x)
    # the last row/column differ only because the image is reflect-padded to a multiple of 8
    assert float((y - ref)[..., :-1, :-1].abs().max()) < 1e-5


def test_other_errors_propagate_unchanged() -> None:
    def broken(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch in layer 3")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        runtime.run_engine(_Engine(), torch.rand(1, 3, 16, 16), device="cpu", tile="auto", fn=broken)


def test_bf16_on_cpu_runs_under_autocast_and_returns_fp32() -> None:
    eng = _Engine()
    x = torch.rand(1, 3, 40, 48)
    y32 = runtime.run_engine(eng, x, device="cpu", precision="fp32", tile=0)
    dtypes: list[torch.dtype] = []
    y16 = runtime.run_engine(
        eng, x, device="cpu", precision="bf16", tile=0, fn=lambda m, t: dtypes.append(m(t).dtype) or m(t)
    )
    assert dtypes == [torch.bfloat16]
    assert y16.dtype == torch.float32 and y16.shape == y32.shape
    assert float((y16 - y32).abs().max()) < 0.05


def test_run_engine_keeps_input_on_host_and_allows_other_channel_counts() -> None:
    eng = _Engine()
    x = torch.rand(1, 3, 50, 50)
    y = runtime.run_engine(eng, x, device="cpu", tile=32, overlap=4, fn=lambda m, t: m(t)[:, :1])
    assert y.shape == (1, 1, 50, 50) and y.device.type == "cpu"
    assert next(eng.parameters()).is_contiguous(memory_format=torch.channels_last)


def test_run_engine_rejects_bad_arguments() -> None:
    eng = _Engine()
    with pytest.raises(UsageError):
        runtime.run_engine(eng, torch.rand(3, 8, 8), device="cpu")
    with pytest.raises(UsageError):
        runtime.run_engine(eng, torch.rand(1, 3, 8, 8), device="cpu", tile="big")
    with pytest.raises(UsageError):
        runtime.run_engine(eng, torch.rand(1, 3, 8, 8), device="cpu", tile=-3)
    with pytest.raises(UsageError):
        runtime.run_engine(eng, torch.rand(1, 3, 8, 8), device="cpu", precision="fp8")


# ---------------------------------------------------------------- decided without torch (the OpenVINO path)


def test_cpu_flag_check_needs_no_torch_and_agrees_with_torchs() -> None:
    """``--backend auto``'s CPU class comes from the CPU's flags, read without torch, and says what torch's own
    CPU probe says (x86: AVX512_BF16 or AMX)."""
    code = ("import sys; from defocus_cli import backends, devices\n"
            "print(devices.cpu_has_native_bf16(), backends.cpu_class(), 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    native, cls, torch_loaded = r.stdout.split()
    assert torch_loaded == "False"
    assert cls == ("native-bf16" if native == "True" else "no-bf16")
    probe = [getattr(torch.cpu, f, None) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if platform.machine().lower() not in ("x86_64", "amd64") or None in probe:
        pytest.skip("torch's bf16 CPU probe exists for x86 only")
    assert devices.cpu_has_native_bf16() == (native == "True") == any(f() for f in probe)


def test_surely_cpu_only_when_no_gpu_can_be_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert devices.surely_cpu("cpu") and devices.surely_cpu(" CPU ")
    assert not devices.surely_cpu("cuda") and not devices.surely_cpu("mps") and not devices.surely_cpu("cuda:1")
    assert not devices.surely_cpu("auto")  # torch is imported here: ask it (and honour its monkeypatches)
    monkeypatch.delitem(sys.modules, "torch")
    node = tmp_path / "nvidia0"
    monkeypatch.setattr(devices, "GPU_NODES", (str(tmp_path / "nvidia*"),))
    monkeypatch.setattr(devices, "_torch_gpu_builds", lambda: ("cuda",))
    assert devices.surely_cpu("auto")  # a CUDA build without a driver
    node.touch()
    assert not devices.surely_cpu("auto")  # a CUDA build with a GPU driver: ask torch
    monkeypatch.setattr(devices, "_torch_gpu_builds", lambda: ())
    assert devices.surely_cpu("auto")  # a CPU build: no GPU can be used
    monkeypatch.setattr(devices, "_torch_gpu_builds", lambda: None)
    assert not devices.surely_cpu("auto")  # cannot tell: ask torch
    monkeypatch.setattr(devices, "_torch_gpu_builds", lambda: ())
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not devices.surely_cpu("auto")  # MPS


def test_torch_gpu_builds_read_without_import_match_torch() -> None:
    builds = devices._torch_gpu_builds()
    assert builds == tuple(k for k in ("cuda", "hip") if getattr(torch.version, k, None))
    if builds == () and sys.platform != "darwin":  # a CPU build: auto can only be the CPU
        assert devices.resolve_device("auto").type == "cpu"
