"""This machine as a bench DeviceInfo: architecture, OS, cores and CPU model (the host and tflm runners)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal

from edgeport.bench.schema import DeviceInfo


def cpu_model(cpuinfo: str) -> str:
    """The processor's name in /proc/cpuinfo text ('' when it names none)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "Hardware", "Model"):
            return value.strip()
    return ""


def host_device(kind: Literal["host", "tflm-host"] = "host", what: str = "") -> DeviceInfo:
    """This machine; `what` names what runs on it, in front of the description."""
    try:
        cpu = cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = ""
    cpu = cpu or platform.processor()
    cores = os.cpu_count()
    machine = f"{platform.machine()} {platform.system()}, {cores} cores" + (f", {cpu}" if cpu else "")
    return DeviceInfo(
        kind=kind,
        description=f"{what} on {machine}" if what else machine,
        cpu=cpu,
        cores=cores,
        os=f"{platform.system()} {platform.release()}",
    )
