// Board hooks used by main.cc. Each board directory implements them: the QEMU machines fully
// (UART, SysTick, semihosting exit), real boards with ITM/SWO output and weak symbols that a vendor
// SDK project overrides (call your HAL's UART in platform_write, for instance).
#ifndef EDGEPORT_PLATFORM_H_
#define EDGEPORT_PLATFORM_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void platform_init(void);
void platform_write(const char* text);
// Cycle counter: DWT CYCCNT where the core has one (and it counts), else SysTick.
void platform_cycles_start(void);
uint32_t platform_cycles_read(void);
const char* platform_cycles_source(void);
uint32_t platform_clock_hz(void);
// Stack high-water mark in bytes (the startup code paints the stack), 0 when it is not measured.
uint32_t platform_stack_used(void);
// Ends the program: exits QEMU with `code` through semihosting, or parks a real board.
void platform_exit(int code);

#ifdef __cplusplus
}
#endif

#endif  // EDGEPORT_PLATFORM_H_
