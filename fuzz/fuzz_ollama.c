/* fuzz_ollama.c — Ollama's NDJSON stream (/api/generate, /api/chat)
 * parsed by core/llm.c, the body in arbitrary byte splits
 * (fuzz/llm_harness.h). */
#include "llm_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fzl_run(LLM_OLLAMA, data, size);
}
