"""Choosing the mixed precision of a run (``optim.mixed_precision=auto``) from the hardware.

bf16 autocast pays only where the hardware multiplies bf16 natively: a CUDA GPU that supports
it, or an x86 CPU with AMX (``amx_bf16``, Sapphire Rapids and later) or AVX-512 BF16
(``avx512_bf16``: Cooper Lake, AMD Zen 4 and later). Elsewhere oneDNN emulates bf16 by converting
to float32 and back around each product, so autocast makes a run slower *and* less exact: an
AVX2-only CPU keeps float32. ``torch.backends.cpu.get_cpu_capability()`` cannot tell these
apart (it says ``AVX512`` on an Ice Lake without bf16 as on a Sapphire Rapids with AMX), so the
bf16 instructions themselves are looked up: first through torch's own CPU probe (the cpuinfo
library that also drives oneDNN's kernel choice, on any OS), else in ``/proc/cpuinfo``'s flags.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

# x86 CPU flags (Linux /proc/cpuinfo names) that mean bf16 products run in hardware.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_value(name: str, cpuinfo: Path) -> str | None:
    """The first CPU's ``name`` line of ``cpuinfo`` (Linux), None where the file or the line is missing."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The flags of the first CPU in ``cpuinfo`` (Linux x86); empty where the file or the line is missing."""
    return set((_cpuinfo_value("flags", cpuinfo) or "").split())


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name as the kernel reports it in ``cpuinfo``, else the platform's guess."""
    import platform

    return _cpuinfo_value("model name", cpuinfo) or platform.processor() or platform.machine() or "unknown CPU"


def _torch_probes() -> list[Callable[[], bool]]:
    """torch's own bf16 probes (private, so looked up rather than imported: absent in some builds)."""
    names = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return [probe for name in names if callable(probe := getattr(torch.cpu, name, None))]


def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX-512 BF16), so bf16 autocast is faster.

    AMX tiles alone (``_is_amx_tile_supported``) count because every CPU with AMX tiles has
    ``amx_bf16``. torch's probe wins when it answers; ``/proc/cpuinfo`` is the fallback.
    """
    probes = _torch_probes()
    if probes:
        try:
            return any(probe() for probe in probes)
        except (RuntimeError, AttributeError):  # a build whose cpuinfo cannot probe this CPU
            pass
    return bool(cpu_flags(cpuinfo) & set(NATIVE_BF16_FLAGS))


def auto_mixed_precision() -> str:
    """What ``mixed_precision=auto`` means here: ``"bf16"`` on a CUDA GPU that supports it or on a CPU
    with native bf16 units, else ``"no"`` (float32: fp16 autocast needs loss scaling and is not chosen
    for the user)."""
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"
