"""The board table: one row per board, numbers from the vendors' datasheets and reference manuals.

Adding a board is adding a row. RAM regions are listed as the linker sees them (address-contiguous
blocks); the fit check compares the tensor arena + stack with the largest one, because TFLite Micro
needs the arena as one block. Flash is the on-chip (or on-board boot) flash the firmware and model
live in; external memories a board also carries are noted but not counted.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from edgeport.errors import EdgeportError

KB = 1024
MB = 1024 * 1024


@dataclass(frozen=True)
class MemoryRegion:
    name: str
    base: int
    size: int


@dataclass(frozen=True)
class Board:
    name: str  # the --board key
    title: str
    mcu: str
    core: str  # e.g. cortex-m4f; the architecture kernels are built for
    clock_hz: int
    flash_bytes: int
    ram: tuple[MemoryRegion, ...]
    gcc_flags: tuple[str, ...]  # -mcpu/-mfpu/-mfloat-abi for arm-none-eabi-gcc
    tflm_arch: str  # TARGET_ARCH for TFLite Micro's Makefile (cortex_m_generic)
    probes: tuple[str, ...]  # supported --probe values, first is the default
    flash_base: int = 0x0  # where the linker puts the vectors and code
    uart_base: int = 0  # CMSDK UART of the FPGA/QEMU machines; 0: ITM/SWO or the vendor SDK's UART
    pyocd_target: str = ""
    openocd_args: tuple[str, ...] = ()
    probe_rs_chip: str = ""
    arduino_fqbn: str = ""
    qemu_machine: str = ""
    aliases: tuple[str, ...] = ()
    notes: str = ""
    datasheet: str = ""
    has_dwt_cycle_counter: bool = True  # ARMv6-M (Cortex-M0/M0+) has no DWT CYCCNT
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def largest_ram(self) -> MemoryRegion:
        return max(self.ram, key=lambda region: region.size)

    @property
    def total_ram(self) -> int:
        return sum(region.size for region in self.ram)

    def describe(self) -> str:
        """The board's row in `edgeport package --list-boards`."""
        return (
            f"{self.name:18} {self.core:14} flash {self.flash_bytes // KB:>5} KB  "
            f"largest RAM {self.largest_ram.size // KB:>5} KB  {self.title}"
        )


_M4F = ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard")
_M7_DP = ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard")
_M7_SP = ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard")
_M33F = ("-mcpu=cortex-m33", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard")
_M55 = ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard")
_M0P = ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft")

BOARDS: tuple[Board, ...] = (
    Board(
        name="nano33ble",
        flash_base=0x10000,  # after the Arduino bootloader arduino-cli flashes through
        title="Arduino Nano 33 BLE Sense",
        mcu="nRF52840",
        core="cortex-m4f",
        clock_hz=64_000_000,
        flash_bytes=1 * MB - 64 * KB,  # 1 MB less the 64 KB Arduino bootloader
        ram=(MemoryRegion("RAM", 0x20000000, 256 * KB),),
        gcc_flags=_M4F,
        tflm_arch="cortex-m4+fp",
        probes=("arduino-cli", "openocd", "pyocd", "probe-rs"),
        pyocd_target="nrf52840",
        openocd_args=("-f", "interface/cmsis-dap.cfg", "-f", "target/nrf52.cfg"),
        probe_rs_chip="nRF52840_xxAA",
        arduino_fqbn="arduino:mbed_nano:nano33ble",
        aliases=("arduino-nano-33-ble-sense", "nano33blesense", "nano-33-ble"),
        notes="The Arduino bootloader occupies the first 64 KB of flash when flashing with arduino-cli.",
        datasheet="nRF52840 Product Specification v1.7: 1 MB flash, 256 KB RAM",
    ),
    Board(
        name="stm32f746g-disco",
        flash_base=0x08000000,
        title="STM32F746G-DISCO",
        mcu="STM32F746NG",
        core="cortex-m7",
        clock_hz=216_000_000,
        flash_bytes=1 * MB,
        # DTCM (64 KB) + SRAM1 (240 KB) + SRAM2 (16 KB) are address-contiguous from 0x20000000.
        ram=(MemoryRegion("DTCM+SRAM1+SRAM2", 0x20000000, 320 * KB),),
        gcc_flags=_M7_SP,
        tflm_arch="cortex-m7+fp",
        probes=("openocd", "pyocd", "probe-rs"),
        pyocd_target="stm32f746ng",
        openocd_args=("-f", "board/stm32f7discovery.cfg"),
        probe_rs_chip="STM32F746NGHx",
        aliases=("stm32f746-disco", "f746disco", "disco-f746ng", "32f746gdiscovery"),
        notes="The board also carries 8 MB of usable SDRAM and 16 MB QSPI flash (not counted here).",
        datasheet="STM32F746xx datasheet DS10916: 1 MB flash, 320 KB SRAM",
    ),
    Board(
        name="nucleo-h743zi2",
        flash_base=0x08000000,
        title="NUCLEO-H743ZI2",
        mcu="STM32H743ZI",
        core="cortex-m7",
        clock_hz=480_000_000,
        flash_bytes=2 * MB,
        ram=(
            MemoryRegion("DTCM", 0x20000000, 128 * KB),
            MemoryRegion("AXI_SRAM", 0x24000000, 512 * KB),
            MemoryRegion("SRAM1+SRAM2+SRAM3", 0x30000000, 288 * KB),
            MemoryRegion("SRAM4", 0x38000000, 64 * KB),
        ),
        gcc_flags=_M7_DP,
        tflm_arch="cortex-m7+fp",
        probes=("openocd", "pyocd", "probe-rs"),
        pyocd_target="stm32h743zitx",
        openocd_args=("-f", "board/st_nucleo_h743zi.cfg"),
        probe_rs_chip="STM32H743ZITx",
        aliases=("nucleo-h743zi", "h743zi", "stm32h743"),
        notes="Also 64 KB ITCM and 4 KB backup SRAM, not usable for the arena.",
        datasheet="STM32H742xI/G STM32H743xI/G datasheet DS12110: 2 MB flash, 1 MB RAM",
    ),
    Board(
        name="nucleo-l4r5zi",
        flash_base=0x08000000,
        title="NUCLEO-L4R5ZI",
        mcu="STM32L4R5ZI",
        core="cortex-m4f",
        clock_hz=120_000_000,
        flash_bytes=2 * MB,
        # SRAM1 (192 KB), SRAM2 (64 KB) and SRAM3 (384 KB) are address-contiguous from 0x20000000.
        ram=(MemoryRegion("SRAM1+SRAM2+SRAM3", 0x20000000, 640 * KB),),
        gcc_flags=_M4F,
        tflm_arch="cortex-m4+fp",
        probes=("openocd", "pyocd", "probe-rs"),
        pyocd_target="stm32l4r5zitx",
        openocd_args=("-f", "interface/stlink.cfg", "-f", "target/stm32l4x.cfg"),
        probe_rs_chip="STM32L4R5ZITx",
        aliases=("nucleo-l4r5", "l4r5zi", "stm32l4r5"),
        datasheet="STM32L4R5xx datasheet DS12023: 2 MB flash, 640 KB SRAM",
    ),
    Board(
        name="rpi-pico",
        flash_base=0x10000000,  # XIP flash; a bootable image also needs pico-sdk's boot2 stage
        title="Raspberry Pi Pico",
        mcu="RP2040",
        core="cortex-m0plus",
        clock_hz=133_000_000,
        flash_bytes=2 * MB,  # on-board W25Q16JV QSPI flash, executed in place
        # SRAM0-3 are striped into one 256 KB block; SRAM4/5 (4 KB each) hold the two cores' stacks.
        ram=(
            MemoryRegion("SRAM0-3", 0x20000000, 256 * KB),
            MemoryRegion("SRAM4", 0x20040000, 4 * KB),
            MemoryRegion("SRAM5", 0x20041000, 4 * KB),
        ),
        gcc_flags=_M0P,
        tflm_arch="cortex-m0plus",
        probes=("uf2", "openocd", "probe-rs"),
        openocd_args=("-f", "interface/cmsis-dap.cfg", "-f", "target/rp2040.cfg"),
        probe_rs_chip="RP2040",
        aliases=("pico", "raspberry-pi-pico", "rp2040", "rpi_pico"),
        has_dwt_cycle_counter=False,
        datasheet="RP2040 datasheet: 264 KB SRAM in six banks; Pico datasheet: 2 MB flash",
    ),
    Board(
        name="nrf5340dk",
        title="nRF5340-DK (application core)",
        mcu="nRF5340",
        core="cortex-m33",
        clock_hz=128_000_000,
        flash_bytes=1 * MB,
        ram=(MemoryRegion("RAM", 0x20000000, 512 * KB),),
        gcc_flags=_M33F,
        tflm_arch="cortex-m33",
        probes=("pyocd", "probe-rs"),
        pyocd_target="nrf5340",
        probe_rs_chip="nRF5340_xxAA",
        aliases=("nrf5340-dk", "nrf5340", "nrf5340dk-nrf5340-cpuapp"),
        notes="The network core (256 KB flash, 64 KB RAM) is not used.",
        datasheet="nRF5340 Product Specification v1.3: application core 1 MB flash, 512 KB RAM",
    ),
    Board(
        name="corstone-300",
        flash_base=0x10000000,  # ITCM, secure alias: QEMU boots the secure vector table there
        uart_base=0x59303000,
        title="Arm Corstone-300 (QEMU mps3-an547, Cortex-M55)",
        mcu="SSE-300",
        core="cortex-m55",
        clock_hz=32_000_000,
        flash_bytes=512 * KB,  # ITCM, where the image is loaded (the 2 MB SRAM is left free)
        ram=(
            MemoryRegion("DTCM", 0x30000000, 512 * KB),
            MemoryRegion("ISRAM0+1", 0x31000000, 4 * MB),
        ),
        gcc_flags=_M55,
        tflm_arch="cortex-m55",
        probes=("qemu",),
        qemu_machine="mps3-an547",
        aliases=("mps3-an547", "an547", "corstone300", "sse-300"),
        notes="Secure aliases are used because the core boots in the secure state.",
        datasheet="Arm AN547 application note; QEMU mps3-an547 memory map",
    ),
    Board(
        name="mps2-an386",
        uart_base=0x40004000,
        title="Arm MPS2+ AN386 (QEMU mps2-an386, Cortex-M4)",
        mcu="MPS2+ FPGA",
        core="cortex-m4f",
        clock_hz=25_000_000,
        flash_bytes=4 * MB,  # ZBT SSRAM1, where the image is loaded
        ram=(MemoryRegion("ZBT_SSRAM2+3", 0x20000000, 4 * MB),),
        gcc_flags=_M4F,
        tflm_arch="cortex-m4+fp",
        probes=("qemu",),
        qemu_machine="mps2-an386",
        aliases=("an386",),
        notes="Also 16 MB PSRAM at 0x21000000, not used.",
        datasheet="Arm AN386 application note; QEMU mps2-an386 memory map",
    ),
    Board(
        name="mps2-an500",
        uart_base=0x40004000,
        title="Arm MPS2+ AN500 (QEMU mps2-an500, Cortex-M7)",
        mcu="MPS2+ FPGA",
        core="cortex-m7",
        clock_hz=25_000_000,
        flash_bytes=4 * MB,
        ram=(MemoryRegion("ZBT_SSRAM2+3", 0x20000000, 4 * MB),),
        gcc_flags=_M7_DP,
        tflm_arch="cortex-m7+fp",
        probes=("qemu",),
        qemu_machine="mps2-an500",
        aliases=("an500",),
        notes="Also 16 MB PSRAM at 0x21000000, not used.",
        datasheet="Arm AN500 application note; QEMU mps2-an500 memory map",
    ),
)


def board_names() -> list[str]:
    return [board.name for board in BOARDS]


def get_board(name: str) -> Board:
    """Look a board up by name or alias (case-insensitive); unknown names list the closest ones."""
    key = name.strip().lower().replace("_", "-")
    for board in BOARDS:
        if key == board.name or key in board.aliases:
            return board
    candidates = {alias: board.name for board in BOARDS for alias in (board.name, *board.aliases)}
    close = difflib.get_close_matches(key, list(candidates), n=5, cutoff=0.5)
    suggestions = list(dict.fromkeys(candidates[c] for c in close))
    known = f"known boards: {', '.join(board_names())}"
    fix = f"did you mean {' or '.join(suggestions)}? ({known})" if suggestions else known
    raise EdgeportError(f"unknown board {name!r}", fix)
