# bangfu: one plain GNU Makefile for the whole tree.
#
#   make            build everything into build/ (libcommon, services, CLI, tests)
#   make test       install what is missing, build, run every test (unit + integration)
#   make run        install, build, start the local stack under ./var and follow its logs
#   make up / down  the same stack in the background / stop it
#   make test SANITIZE=1   the same suite under AddressSanitizer + UBSan (build-san/)
#   make memcheck   unit tests under valgrind
#   make bench      benchmarks (ratios against raw baselines)
#   make chaos      mixed load under faults (SIGKILL, PostgreSQL/Redis/bus restarts): 0 lost, 0 doubled
#   make fuzz       libFuzzer targets under ASan+UBSan for FUZZ_SECONDS each (tests/fuzz)
#   make format     clang-format every C file
#
# Required flags are fixed; user CFLAGS are appended, never replacing them.

BUILD    ?= build
ifneq ($(SANITIZE),)
  BUILD  := build-san
  SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif

ifneq ($(FUZZ),)
  # libFuzzer targets (tests/fuzz): clang, every object instrumented
  BUILD  := build-fuzz
  CC     := clang
  SANFLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
              -fno-sanitize-recover=undefined
  SANFLAGS += -Wno-unknown-warning-option
endif

CC       ?= cc
PKGS     := libzmq msgpack hiredis libpq inih jansson libcurl openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

REQ_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wstrict-prototypes \
              -Wwrite-strings -Wshadow -Wno-format-truncation -O2 -g -MMD -MP -Ilibcommon -I$(BUILD)/gen \
              $(SANFLAGS) $(PKG_CFLAGS)
ALL_CFLAGS := $(REQ_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(SANFLAGS) $(LDFLAGS)
LIBS     := $(PKG_LIBS) -lcsv -lpthread -lm

LIB_SRC  := $(wildcard libcommon/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB_A    := $(BUILD)/libbangfu.a

SERVICES := $(notdir $(wildcard services/*))
SVC_BINS := $(SERVICES:%=$(BUILD)/bin/bangfu-%)

CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
CLI_BIN  := $(BUILD)/bin/bangfu

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)

BENCH_SRC := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all deps test test-unit run up down clean format memcheck bench compose-test fuzz fuzz-bins chaos
all: $(LIB_A) $(SVC_BINS) $(CLI_BIN) $(UNIT_BINS) $(BENCH_BINS)

deps:
	@bash scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC $<"; $(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB_A): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "AR $@"; rm -f $@ && ar rcs $@ $^

# Each service: services/<name>/*.c plus its migrations embedded as C strings.
define SERVICE_RULES
$(1)_SRC := $$(wildcard services/$(1)/*.c)
$(1)_SQL := $$(sort $$(wildcard services/$(1)/migrations/*.sql))
$(1)_OBJ := $$($(1)_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/$(1)_migrations.o
$(BUILD)/gen/$(1)_migrations.c: $$($(1)_SQL) scripts/embed_sql.sh
	@mkdir -p $$(dir $$@)
	@bash scripts/embed_sql.sh $(1) $$($(1)_SQL) > $$@
$(BUILD)/gen/$(1)_migrations.o: $(BUILD)/gen/$(1)_migrations.c
	@echo "CC $$<"; $(CC) $(ALL_CFLAGS) -c $$< -o $$@
$(BUILD)/bin/bangfu-$(1): $$($(1)_OBJ) $(LIB_A)
	@mkdir -p $$(dir $$@)
	@echo "LD $$@"; $(CC) $(ALL_LDFLAGS) -o $$@ $$($(1)_OBJ) $(LIB_A) $(LIBS)
endef
$(foreach s,$(SERVICES),$(eval $(call SERVICE_RULES,$(s))))

$(CLI_BIN): $(CLI_OBJ) $(LIB_A)
	@mkdir -p $(dir $@)
	@echo "LD $@"; $(CC) $(ALL_LDFLAGS) -o $@ $(CLI_OBJ) $(LIB_A) $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB_A)
	@mkdir -p $(dir $@)
	@echo "LD $@"; $(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(LIB_A) $(ALL_LDFLAGS) $(LIBS)

$(BUILD)/bench/%: bench/%.c $(LIB_A)
	@mkdir -p $(dir $@)
	@echo "LD $@"; $(CC) $(ALL_CFLAGS) -o $@ $< $(LIB_A) $(ALL_LDFLAGS) $(LIBS)

# libFuzzer targets: built with FUZZ=1 (clang, ASan+UBSan), run by tests/fuzz/run.sh
$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIB_A) $(BUILD)/cli/csvread.o
	@mkdir -p $(dir $@)
	@echo "LD $@"; $(CC) $(ALL_CFLAGS) -Icli -fsanitize=fuzzer -o $@ $< $(BUILD)/cli/csvread.o \
	  $(LIB_A) $(ALL_LDFLAGS) $(LIBS)

fuzz-bins: $(FUZZ_BINS)

fuzz:
	@bash tests/fuzz/run.sh

# the chaos suite at full size (make test runs it with small numbers)
chaos: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) CHAOS_OPS=$${CHAOS_OPS:-10000} TESTS=test_chaos bash tests/run.sh

test: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) SANITIZE=$(SANITIZE) bash tests/run.sh

test-unit: all
	@BUILD=$(BUILD) UNIT_ONLY=1 bash tests/run.sh

memcheck: all
	@BUILD=$(BUILD) MEMCHECK=1 UNIT_ONLY=1 bash tests/run.sh

run: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash scripts/stack.sh run

up: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash scripts/stack.sh up

down:
	@BUILD=$(BUILD) bash scripts/stack.sh down

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash bench/run.sh

compose-test:
	@bash docker/compose-test.sh

format:
	clang-format -i $(shell find libcommon services cli tests bench -name '*.[ch]')

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
