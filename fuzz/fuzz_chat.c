/* fuzz_chat.c — seed 001's adapter (core/proto.h) fed a sequence of client
 * frames: the first line of the input is appended to "/ws/", each
 * further line is one frame (fuzz/proto_harness.h). */
#include "proto_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fzp_run("/ws/", data, size);
}
