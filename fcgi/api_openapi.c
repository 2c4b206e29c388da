/* api_openapi.c — GET /api/openapi.json: the OpenAPI 3.1 description of
 * parley.fcgi's routes (docs/openapi.md).
 *
 * docs/openapi.yaml is the source; docs/openapi.json, its JSON twin, is
 * generated from it (tools/openapi-json.py) and committed; the build embeds
 * that file (tools/embed-text.sh → $(BUILD)/gen/openapi.c), so the answer is
 * the same bytes on every request of one binary, with a strong ETag and
 * Cache-Control allowing a short cache. Read-only static data: any thread.
 */
#include "handlers.h"

#include <stdio.h>

/* $(BUILD)/gen/openapi.c (tools/embed-text.sh parley_openapi_json ...). */
extern const char parley_openapi_json[];
extern const size_t parley_openapi_json_len;
extern const char parley_openapi_json_etag[];

int h_openapi(struct request *r)
{
    char extra[192];
    snprintf(extra, sizeof extra,
             "Content-Length: %zu\r\nETag: %s\r\nCache-Control: public, max-age=300\r\n",
             parley_openapi_json_len, parley_openapi_json_etag);
    if (res_start(r, 200, "application/json", extra) < 0)
        return -1;
    return res_write(r, parley_openapi_json, parley_openapi_json_len);
}
