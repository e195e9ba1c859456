// Minimal Cortex-M startup shared by every board: vector table, .data copy, .bss clear, stack paint,
// FPU on, C++ constructors, main(). Symbols come from the linker scripts in this directory.
#include <stdint.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack_top__;
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);
extern int main(void);
extern void platform_stack_paint(void);

void Reset_Handler(void);
void Default_Handler(void);

extern void platform_write(const char* text);
extern void platform_exit(int code);

// Faults and unexpected interrupts all end here: say which exception (IPSR) and exit with status 7, so
// a crash under QEMU ends the run at once instead of at its time limit (a real board parks).
void Default_Handler(void) {
  uint32_t ipsr;
  __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
  char text[] = "FAIL: fault, exception 000\n";
  text[23] = (char)('0' + ipsr / 100 % 10);
  text[24] = (char)('0' + ipsr / 10 % 10);
  text[25] = (char)('0' + ipsr % 10);
  platform_write(text);
  platform_exit(7);
}

void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Default_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

__attribute__((section(".vectors"), used)) void (*const g_vectors[16])(void) = {
    (void (*)(void))(&__stack_top__),
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0,
    0,
    0,
    0,
    SVC_Handler,
    0,
    0,
    PendSV_Handler,
    SysTick_Handler,
};

void Reset_Handler(void) {
  uint32_t* src = &__data_load__;
  for (uint32_t* dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
  platform_stack_paint();  // after .bss is cleared: it sets a flag there
#if defined(__ARM_FP)
  // CPACR: full access to CP10/CP11, or the first float instruction faults.
  *(volatile uint32_t*)0xE000ED88u |= (0xFu << 20);
  __asm volatile("dsb\n isb");
#endif
  for (void (**ctor)(void) = __init_array_start; ctor < __init_array_end; ++ctor) (*ctor)();
  main();
  for (;;) {
  }
}
