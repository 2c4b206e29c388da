# Parley — top-level build.
#
#   make            build the core library, programs and unit tests
#   make test       install missing packages, build, run every test suite
#   make run        build and serve the demo (see README)
#   make deps       install missing Debian packages (apt-get, only if needed)
#   make bench      run the benchmarks in bench/
#   make fuzz       run every fuzz harness FUZZ_S (60) seconds (docs/RELIABILITY.md)
#   make deb        the Debian package, from a release build in build-deb/ (docs/debian.md)
#   SANITIZE=address,undefined make test   build and test under sanitizers
#
# Objects go to $(BUILD)/ (out of the source tree), with -MMD dependency files.

BUILD    ?= build
CC       ?= cc
SANITIZE ?=
# libpq (PostgreSQL's client library, libpq-dev): core's PostgreSQL backend
# (core/storage/pg/, issue 10), so every user of libparley links it.
PKGS     := libcurl jansson sqlite3 libjwt openssl fcgi libwebsockets libpq

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
            -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter \
            -fno-strict-aliasing -pthread -MMD -MP -Icore -I$(BUILD)/gen $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -pthread -lm
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=$(SANITIZE)
endif

CORE_SRC  := $(sort $(wildcard core/*.c core/storage/*.c core/storage/pg/*.c))
CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/migrations.o $(BUILD)/gen/pg_migrations.o
LIBPARLEY := $(BUILD)/libparley.a

UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRC  := $(sort $(wildcard tests/tools/*.c))
TOOL_BIN  := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
FCGI_SRC  := $(sort $(wildcard fcgi/*.c))
# Everything of the FastCGI app but its main(): unit tests link it to call
# the dispatcher and handlers without a web server.
FCGI_LIB  := $(BUILD)/libparley-fcgi.a
FCGI_LIB_OBJ := $(filter-out $(BUILD)/fcgi/main.o,$(FCGI_SRC:%.c=$(BUILD)/%.o))
# GET /api/openapi.json serves docs/openapi.json, embedded (fcgi/api_openapi.c,
# docs/openapi.md): the JSON is generated from docs/openapi.yaml by
# tools/openapi-json.py and committed, so building needs no Python.
FCGI_LIB_OBJ += $(BUILD)/gen/openapi.o
FCGI_BIN  := $(if $(wildcard fcgi/main.c),$(BUILD)/parley.fcgi)
WS_SRC    := $(sort $(wildcard ws-bridge/*.c))
WS_BIN    := $(if $(wildcard ws-bridge/main.c),$(BUILD)/parley-ws)
CLI_SRC   := $(sort $(wildcard cli/*.c))
CLI_BIN   := $(BUILD)/parley

# Fuzz harnesses (fuzz/, docs/RELIABILITY.md): make fuzz builds each with
# libFuzzer in $(FUZZ_BUILD)/ and runs it; make test replays every kept
# regression input and seed through each, built like a unit test
# ($(BUILD)/tests/test_fuzz_<name>, fuzz/replay.c's main: no clang needed).
FUZZ_SRC  := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:fuzz/fuzz_%.c=%)
FUZZ_REPLAY_BIN := $(FUZZ_NAMES:%=$(BUILD)/tests/test_fuzz_%)
FUZZ_HDR  := $(wildcard fuzz/*.h)

MIGRATIONS := $(sort $(wildcard sql/[0-9]*.sql))
PG_MIGRATIONS := $(sort $(wildcard sql/pg/[0-9]*.sql))

.PHONY: all deps test unit run bench clean node-deps
all: $(LIBPARLEY) $(CLI_BIN) $(UNIT_BIN) $(FUZZ_REPLAY_BIN) $(TOOL_BIN) $(BENCH_BIN) $(FCGI_BIN) $(WS_BIN)

deps:
	@tools/deps.sh

node-deps: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(BUILD)/gen/migrations.c: $(MIGRATIONS) tools/embed-sql.sh
	@mkdir -p $(dir $@)
	tools/embed-sql.sh $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/migrations.o: $(BUILD)/gen/migrations.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/gen/pg_migrations.c: $(PG_MIGRATIONS) tools/embed-sql.sh
	@mkdir -p $(dir $@)
	tools/embed-sql.sh --name parley_pg_migrations $(PG_MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/pg_migrations.o: $(BUILD)/gen/pg_migrations.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/gen/openapi.c: docs/openapi.json tools/embed-text.sh
	@mkdir -p $(dir $@)
	tools/embed-text.sh parley_openapi_json docs/openapi.json > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/openapi.o: $(BUILD)/gen/openapi.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIBPARLEY): $(CORE_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(FCGI_LIB): $(FCGI_LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/tests/test_fuzz_%: fuzz/fuzz_%.c fuzz/replay.c $(FUZZ_HDR) $(FCGI_LIB) $(LIBPARLEY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ifuzz -Ifcgi -Itests/unit -DFUZZ_NAME='"$*"' $(LDFLAGS) -o $@ $< fuzz/replay.c $(FCGI_LIB) $(LIBPARLEY) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/th.h $(FCGI_LIB) $(LIBPARLEY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -Ifcgi $(LDFLAGS) -o $@ $< $(FCGI_LIB) $(LIBPARLEY) $(LDLIBS)

$(BUILD)/tests/%: tests/tools/%.c $(LIBPARLEY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(LIBPARLEY) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIBPARLEY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBPARLEY) $(LDLIBS)

# an LD_PRELOAD shim for one experiment (bench/preload/nagle.c)
$(BUILD)/bench/nagle.so: bench/preload/nagle.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -shared -o $@ $< -ldl

$(BUILD)/parley.fcgi: $(FCGI_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/openapi.o $(LIBPARLEY)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/parley: $(CLI_SRC:%.c=$(BUILD)/%.o) $(LIBPARLEY)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The bridge carries the HTTP front's long-poll handlers (ws-bridge/httpfront.c)
$(BUILD)/ws-bridge/httpfront.o: CFLAGS += -Ifcgi
$(BUILD)/parley-ws: $(WS_SRC:%.c=$(BUILD)/%.o) $(FCGI_LIB) $(LIBPARLEY)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# make test: deps, build, then every suite; tests/run.sh prints "N passed, N failed".
# TEST_JOBS: the integration and node suites run that many at a time, each
# lane with its own simulated LLM (tests/run.sh; TEST_ALONE: the suites that
# run with nothing beside them); TEST_JOBS=1 runs them one after the other.
TEST_JOBS ?= 2
test:
	@tools/deps.sh test
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory node-deps
	@BUILD=$(BUILD) TEST_JOBS=$(TEST_JOBS) tests/run.sh

unit: all
	@BUILD=$(BUILD) tests/run.sh unit

run: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory node-deps
	@BUILD=$(BUILD) tools/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/run.sh

# make deb: parley_<version>_<arch>.deb in $(DEB_BUILD)/ (docs/debian.md),
# from a release build of its own there (no sanitizers, Debian's hardening
# flags); the version is packaging/changelog's top entry.
DEB_BUILD ?= build-deb
.PHONY: deb
deb:
	@MAKE="$(MAKE)" packaging/build-deb.sh $(DEB_BUILD)

# make fuzz: every harness of fuzz/ built with clang's libFuzzer (plus ASan
# and UBSan) in $(FUZZ_BUILD)/ and run FUZZ_S seconds (tools/fuzz.sh);
# crashes go to fuzz/crashes/; non-zero when any harness found one.
# FUZZ=name runs one harness. The clang packages are installed on demand
# (tools/deps.sh fuzz).
FUZZ_BUILD ?= build-fuzz
FUZZ_S     ?= 60
FUZZ_CC    ?= clang-14
FUZZ       ?=
.PHONY: fuzz fuzz-build fuzz-bins
fuzz: fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_S=$(FUZZ_S) tools/fuzz.sh $(FUZZ)

fuzz-build:
	@tools/deps.sh fuzz
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) \
	    SANITIZE=fuzzer-no-link,address,undefined fuzz-bins

fuzz-bins: $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c $(FUZZ_HDR) $(FCGI_LIB) $(LIBPARLEY)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ifuzz -Ifcgi -Itests/unit $(LDFLAGS) -fsanitize=fuzzer -o $@ $< $(FCGI_LIB) $(LIBPARLEY) $(LDLIBS)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
