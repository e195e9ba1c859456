// Cycle counting and semihosting shared by the boards: DWT CYCCNT when the core has it and it runs
// (QEMU does not model it), else SysTick counting down from 2^24 with a wrap counter.
#include <stdint.h>

#include "platform.h"

#define DEMCR (*(volatile uint32_t*)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t*)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t*)0xE0001004u)
#define SYST_CSR (*(volatile uint32_t*)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018u)

static volatile uint32_t g_systick_wraps;
static int g_use_dwt;

void SysTick_Handler(void) { g_systick_wraps++; }

void platform_cycles_start(void) {
  g_use_dwt = 0;
#if defined(EDGEPORT_HAS_DWT)
  DEMCR |= (1u << 24);  // TRCENA
  DWT_CYCCNT = 0;
  DWT_CTRL |= 1u;
  for (volatile int i = 0; i < 16; ++i) {
  }
  g_use_dwt = DWT_CYCCNT != 0;
#endif
  if (!g_use_dwt) {
    g_systick_wraps = 0;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 0x7u;  // processor clock, interrupt on wrap, enable
  }
}

uint32_t platform_cycles_read(void) {
  if (g_use_dwt) return DWT_CYCCNT;
  uint32_t wraps, value;
  do {
    wraps = g_systick_wraps;
    value = SYST_CVR;
  } while (wraps != g_systick_wraps);
  // CVR reads 0 until the first tick reloads it from RVR: that is "no time elapsed yet".
  if (value == 0u) value = 0x00FFFFFFu;
  return wraps * 0x01000000u + (0x00FFFFFFu - value);
}

const char* platform_cycles_source(void) { return g_use_dwt ? "DWT" : "SysTick"; }

// Stack high-water mark: the startup code paints the stack reserved by the linker script below the
// current stack pointer; the deepest word no longer painted is the most stack ever used. Weak: a vendor
// linker script without __stack_size__ still links, and then nothing is painted or measured.
#define STACK_PAINT 0xC5ACCE55u
extern char __stack_top__[] __attribute__((weak));
extern char __stack_size__[] __attribute__((weak));
static int g_stack_painted;

static uint32_t* stack_bottom(void) { return (uint32_t*)(__stack_top__ - (uintptr_t)__stack_size__); }

void platform_stack_paint(void) {
  if (__stack_top__ == 0 || (uintptr_t)__stack_size__ == 0) return;
  uint32_t* sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  for (uint32_t* word = stack_bottom(); word < sp - 16; ++word) *word = STACK_PAINT;  // 64 bytes spare
  g_stack_painted = 1;
}

uint32_t platform_stack_used(void) {
  if (!g_stack_painted) return 0;
  const uint32_t* word = stack_bottom();
  while ((char*)word < __stack_top__ && *word == STACK_PAINT) ++word;
  return (uint32_t)(__stack_top__ - (char*)word);
}

#if defined(EDGEPORT_SEMIHOSTING)
static int semihost(int op, void* arg) {
  register int r0 __asm("r0") = op;
  register void* r1 __asm("r1") = arg;
  __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}
#endif

void platform_exit(int code) {
#if defined(EDGEPORT_SEMIHOSTING)
  // SYS_EXIT with ADP_Stopped_ApplicationExit; QEMU's exit status is `code` with the extended form.
  uint32_t block[2] = {0x20026u, (uint32_t)code};
  semihost(0x20, block);
#else
  (void)code;
#endif
  for (;;) {
  }
}
