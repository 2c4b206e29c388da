/* fuzz_openai.c — the OpenAI-compatible server-sent events stream
 * (/v1/chat/completions)
 * parsed by core/llm.c, the body in arbitrary byte splits
 * (fuzz/llm_harness.h). */
#include "llm_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fzl_run(LLM_OPENAI, data, size);
}
