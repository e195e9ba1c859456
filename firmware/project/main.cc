// edgeport self-test firmware: check the model's CRC, run the embedded test input through TFLite
// Micro, compare with the output the host runtime computed, print PASS/FAIL and the latency; then
// time warmup + runs more inferences and print them in the format targets/cortex_m/bench_lines.py reads.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "model_data.h"
#include "model_ops.h"
#include "model_settings.h"
#include "platform.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "test_data.h"
#if defined(EDGEPORT_TFLM_DEBUG_LOG_CALLBACK)  // set by the Makefile/CMake: TFLM built as cortex_m_generic
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#endif

// How many inferences to time after the self-test (make BENCH_WARMUP=W BENCH_RUNS=N).
#ifndef EDGEPORT_BENCH_WARMUP
#define EDGEPORT_BENCH_WARMUP 1
#endif
#ifndef EDGEPORT_BENCH_RUNS
#define EDGEPORT_BENCH_RUNS 10
#endif
// make BENCH_PROFILE=1: TFLite Micro's MicroProfiler times each op of the last timed inference and the
// firmware prints its LogCsv between "edgeport profile:" lines (bench_lines.py reads them).
#ifndef EDGEPORT_BENCH_PROFILE
#define EDGEPORT_BENCH_PROFILE 0
#endif
#if EDGEPORT_BENCH_PROFILE
#include "tensorflow/lite/micro/micro_profiler.h"
#include "tensorflow/lite/micro/micro_time.h"

// TFLM's cortex_m_generic micro_time.cc reads DWT CYCCNT, which QEMU does not emulate (it stays 0): the
// profiler reads the firmware's own counter instead (DWT where it counts, else SysTick). Defining both of
// that file's functions here keeps the library's copy out of the link.
namespace tflite {
uint32_t ticks_per_second() { return platform_clock_hz(); }
uint32_t GetCurrentTimeTicks() { return platform_cycles_read(); }
}  // namespace tflite
#endif

namespace {

alignas(16) uint8_t g_arena[kTensorArenaSize];

void print(const char* text) { platform_write(text); }

template <typename... Args>
void printf_line(const char* format, Args... args) {
  char line[160];
  snprintf(line, sizeof(line), format, args...);
  platform_write(line);
}

// zlib's CRC-32, the one edgeport writes into model_data.h.
uint32_t crc32(const unsigned char* data, unsigned int length) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned int i = 0; i < length; ++i) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// Largest difference between an output and its expected value, in the tolerance's units.
bool output_matches(const TfLiteTensor* out, const void* expected, size_t bytes, int* worst) {
  if (out->bytes != bytes) return false;
  *worst = 0;
  switch (out->type) {
    case kTfLiteFloat32: {
      const float* got = out->data.f;
      const float* want = static_cast<const float*>(expected);
      const size_t n = bytes / sizeof(float);
      float scale = 1e-6f, err = 0.0f;
      for (size_t i = 0; i < n; ++i) scale = fmaxf(scale, fabsf(want[i]));
      for (size_t i = 0; i < n; ++i) err = fmaxf(err, fabsf(got[i] - want[i]));
      *worst = static_cast<int>(1e6f * err / scale);  // parts per million of max |y|
      return err <= kTestFloatTolerance * scale;
    }
    case kTfLiteInt8:
    case kTfLiteUInt8:
    case kTfLiteInt16:
    case kTfLiteInt32: {
      const size_t elem = out->type == kTfLiteInt16 ? 2 : out->type == kTfLiteInt32 ? 4 : 1;
      for (size_t i = 0; i < bytes / elem; ++i) {
        int32_t got = 0, want = 0;
        if (out->type == kTfLiteInt8) {
          got = out->data.int8[i];
          want = static_cast<const int8_t*>(expected)[i];
        } else if (out->type == kTfLiteUInt8) {
          got = out->data.uint8[i];
          want = static_cast<const uint8_t*>(expected)[i];
        } else if (out->type == kTfLiteInt16) {
          got = out->data.i16[i];
          want = static_cast<const int16_t*>(expected)[i];
        } else {
          got = out->data.i32[i];
          want = static_cast<const int32_t*>(expected)[i];
        }
        const int diff = got > want ? got - want : want - got;
        if (diff > *worst) *worst = diff;
      }
      return *worst <= kTestIntTolerance;
    }
    default:
      return memcmp(out->data.raw, expected, bytes) == 0;
  }
}

[[noreturn]] void fail(const char* text, int code) {
  print(text);
  platform_exit(code);
  for (;;) {
  }
}

}  // namespace

// Generated per model by edgeport: copies the test inputs and checks the outputs (test_io.cc).
bool edgeport_set_inputs(tflite::MicroInterpreter& interpreter);
bool edgeport_check_outputs(tflite::MicroInterpreter& interpreter, bool (*check)(const TfLiteTensor*, const void*,
                                                                                 size_t, int*));

int main(void) {
  platform_init();
#if defined(EDGEPORT_TFLM_DEBUG_LOG_CALLBACK)
  // TFLM's own messages (MicroPrintf: which op failed, how many arena bytes it wanted) on the same port.
  RegisterDebugLogCallback(platform_write);
#endif
  print("edgeport self-test\n");
  const uint32_t crc = crc32(@MODEL_NAME@, @MODEL_NAME@_len);
  printf_line("model: %u bytes, crc32 0x%08lx (%s)\n", @MODEL_NAME@_len, static_cast<unsigned long>(crc),
              crc == @MODEL_NAME@_crc32 ? "ok" : "MISMATCH");
  if (crc != @MODEL_NAME@_crc32) {
    print("FAIL: the flashed model is not the packaged one\n");
    platform_exit(2);
  }

  const tflite::Model* model = tflite::GetModel(@MODEL_NAME@);
  static ModelOpResolver resolver;
  if (RegisterModelOps(resolver) != kTfLiteOk) {
    print("FAIL: op registration\n");
    platform_exit(3);
  }
#if EDGEPORT_BENCH_PROFILE
  static tflite::MicroProfiler profiler;  // 80 KB of event slots (kMaxEvents): profile builds only
  static tflite::MicroInterpreter interpreter(model, resolver, g_arena, kTensorArenaSize, nullptr, &profiler);
#else
  static tflite::MicroInterpreter interpreter(model, resolver, g_arena, kTensorArenaSize);
#endif
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    print("FAIL: AllocateTensors (arena too small?)\n");
    platform_exit(4);
  }
  printf_line("arena: %u of %u bytes used\n", static_cast<unsigned>(interpreter.arena_used_bytes()),
              static_cast<unsigned>(kTensorArenaSize));
  if (!edgeport_set_inputs(interpreter)) {
    print("FAIL: input shape differs from the test data\n");
    platform_exit(5);
  }
  platform_cycles_start();
  const uint32_t start = platform_cycles_read();
  const TfLiteStatus status = interpreter.Invoke();
  const uint32_t cycles = platform_cycles_read() - start;
  if (status != kTfLiteOk) {
    print("FAIL: Invoke\n");
    platform_exit(6);
  }
  const uint32_t hz = platform_clock_hz();
  printf_line("latency: %lu cycles (%s), %lu us at %lu MHz\n", static_cast<unsigned long>(cycles),
              platform_cycles_source(), static_cast<unsigned long>(hz ? cycles / (hz / 1000000u) : 0),
              static_cast<unsigned long>(hz / 1000000u));
  const bool ok = edgeport_check_outputs(interpreter, output_matches);
  if (!ok) fail("FAIL: output differs from the host reference\n", 1);
  print("PASS\n");

  // The kernels may reuse the input's arena bytes for later tensors: the input is set again before
  // each inference, outside the timed window.
  printf_line("edgeport bench: warmup=%u runs=%u clock_hz=%lu source=%s\n", EDGEPORT_BENCH_WARMUP,
              EDGEPORT_BENCH_RUNS, static_cast<unsigned long>(hz), platform_cycles_source());
  for (unsigned i = 0; i < EDGEPORT_BENCH_WARMUP; ++i) {
    edgeport_set_inputs(interpreter);
    if (interpreter.Invoke() != kTfLiteOk) fail("FAIL: Invoke\n", 6);
  }
  for (unsigned i = 0; i < EDGEPORT_BENCH_RUNS; ++i) {
    edgeport_set_inputs(interpreter);
#if EDGEPORT_BENCH_PROFILE
    profiler.ClearEvents();  // the events of this inference only (and never more than kMaxEvents)
#endif
    const uint32_t begin = platform_cycles_read();
    const TfLiteStatus run_status = interpreter.Invoke();
    const uint32_t run_cycles = platform_cycles_read() - begin;
    if (run_status != kTfLiteOk) fail("FAIL: Invoke\n", 6);
    printf_line("inference %u: %lu cycles\n", i, static_cast<unsigned long>(run_cycles));
  }
#if EDGEPORT_BENCH_PROFILE
  if (EDGEPORT_BENCH_RUNS > 0) {
    printf_line("edgeport profile: inference %u\n", EDGEPORT_BENCH_RUNS - 1);
    profiler.LogCsv();
    print("edgeport profile: end\n");
  }
#endif
  const uint32_t stack = platform_stack_used();
  if (stack) printf_line("stack: %lu bytes used\n", static_cast<unsigned long>(stack));
  print("edgeport bench: done\n");
  platform_exit(0);
  return 0;
}
