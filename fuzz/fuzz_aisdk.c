/* fuzz_aisdk.c — the AI SDK UI message stream adapter (core/proto_aisdk.c)
 * fed a sequence of request bodies: the first line of the input is ignored
 * (the adapter has one path, PROTO_AISDK_PATH), each further line is one
 * POST body (fuzz/proto_harness.h). */
#include "proto_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fzp_run(PROTO_AISDK_PATH, data, size);
}
