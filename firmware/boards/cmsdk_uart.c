// Serial output on the Arm CMSDK APB UART of the MPS2/MPS3 FPGA images (and QEMU's models of them).
#include <stdint.h>

#include "platform.h"

#ifndef EDGEPORT_UART_BASE
#error "define EDGEPORT_UART_BASE for the board"
#endif

#define UART_DATA (*(volatile uint32_t*)(EDGEPORT_UART_BASE + 0x0u))
#define UART_STATE (*(volatile uint32_t*)(EDGEPORT_UART_BASE + 0x4u))
#define UART_CTRL (*(volatile uint32_t*)(EDGEPORT_UART_BASE + 0x8u))
#define UART_BAUDDIV (*(volatile uint32_t*)(EDGEPORT_UART_BASE + 0x10u))

void platform_init(void) {
  UART_BAUDDIV = EDGEPORT_CLOCK_HZ / 115200u;
  UART_CTRL = 1u;  // TX enable
}

void platform_write(const char* text) {
  for (; *text; ++text) {
    if (*text == '\n') {
      while (UART_STATE & 1u) {
      }
      UART_DATA = '\r';
    }
    while (UART_STATE & 1u) {  // TX buffer full
    }
    UART_DATA = (uint32_t)(unsigned char)*text;
  }
}

uint32_t platform_clock_hz(void) { return EDGEPORT_CLOCK_HZ; }
