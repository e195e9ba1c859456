// Output for real boards without a board support package: ITM stimulus port 0 (SWO), readable with
// the probe's SWO viewer (ST-LINK, J-Link, pyOCD). Every hook is weak: a vendor SDK project (STM32Cube,
// nRF Connect, Arduino, pico-sdk) overrides platform_init/platform_write with its UART driver.
#include <stdint.h>

#include "platform.h"

#define ITM_STIM0 (*(volatile uint32_t*)0xE0000000u)
#define ITM_TER (*(volatile uint32_t*)0xE0000E00u)
#define ITM_TCR (*(volatile uint32_t*)0xE0000E80u)

__attribute__((weak)) void platform_init(void) {}

__attribute__((weak)) void platform_write(const char* text) {
#if defined(EDGEPORT_HAS_DWT)  // ARMv7-M and later; ARMv6-M (Cortex-M0/M0+) has no ITM
  if (!(ITM_TCR & 1u) || !(ITM_TER & 1u)) return;  // no debugger enabled tracing
  for (; *text; ++text) {
    while (ITM_STIM0 == 0u) {
    }
    *(volatile uint8_t*)&ITM_STIM0 = (uint8_t)*text;
  }
#else
  (void)text;
#endif
}

__attribute__((weak)) uint32_t platform_clock_hz(void) { return EDGEPORT_CLOCK_HZ; }
