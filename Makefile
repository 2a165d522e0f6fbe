# Creator Automation — top-level build.
#   make                 build libcommon.a and the four daemons into build/
#   make test            build and run every test (unit, integration, fakes, browser)
#   make SANITIZE=address,undefined test
#   make deps            install the Debian packages the build, tests and runtime need
#   make run             start the whole product on this machine (deploy/local)
#   make bench           run the benchmarks in tests/bench
#   make schema-dump     regenerate docs/schema/current.sql (the live schema after every migration)
#   make fuzz            run the libFuzzer targets in tests/fuzz (FUZZ_SECONDS each); fuzz-ci: 30 s each
#   make install         PREFIX=/usr/local DESTDIR=/stage: binaries, ca-migrate/ca-backup/ca-restore,
#                        the dashboard in $(PREFIX)/share/creator-automation/web (the image uses it)

SERVICES := api-gateway drive-poller job-worker billing-webhook
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

BUILD    ?= build
CC       ?= cc
PKGS     := libevent libevent_pthreads libpq libcjson libcurl hiredis openssl
VIPS_PKG := vips gmodule-no-export-2.0 libjpeg

WARN     := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
            -Wshadow -Wno-unused-parameter
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -pthread -MMD -MP -Icommon \
            -DCA_VERSION='"$(VERSION)"' $(shell pkg-config --cflags $(PKGS) $(VIPS_PKG) 2>/dev/null)
LDLIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread
VIPS_CFLAGS := $(shell pkg-config --cflags $(VIPS_PKG) 2>/dev/null)
VIPS_LIBS   := $(shell pkg-config --libs $(VIPS_PKG) 2>/dev/null)
TEST_LIBS   := $(shell pkg-config --libs cmocka 2>/dev/null)

# Quiet by default; `make V=1` shows the commands.
ifeq ($(V),1)
  Q :=
  say = @true
else
  Q := @
  say = @printf '  %-6s %s\n' $(1) $(2)
endif

ifneq ($(SANITIZE),)
  CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
  LDFLAGS += -fsanitize=$(SANITIZE)
  BUILD   := build/san
endif

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)
LIBCOMMON  := $(BUILD)/lib/libcommon.a

BINS := $(SERVICES:%=$(BUILD)/bin/%)

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
INTEG_SRC := $(wildcard tests/integration/test_*.c)
TEST_SUPPORT_SRC := $(wildcard tests/support/*.c)
TEST_SUPPORT_OBJ := $(TEST_SUPPORT_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BINS := $(UNIT_SRC:tests/%.c=$(BUILD)/tests/%) $(INTEG_SRC:tests/%.c=$(BUILD)/tests/%)


.PHONY: all test deps run run-clean bench clean format format-check tests-build schema-dump install
all: $(BINS)

# Embedded SQL: each service carries its own slice (sql/<service>/NNN_*.sql) and
# the shared role bootstrap (sql/000_roles.sql) inside the binary.
$(BUILD)/tools/embed: tools/embed.c
	@mkdir -p $(dir $@)
	$(call say,CC,$@)
	$(Q)$(CC) -std=gnu11 $(WARN) -O1 -o $@ $<

define service_rules
$(BUILD)/gen/$(1)_sql.c: $(BUILD)/tools/embed sql/000_roles.sql $(sort $(wildcard sql/$(1)/*.sql))
	@mkdir -p $$(dir $$@)
	$$(call say,EMBED,$$@)
	$$(Q)$(BUILD)/tools/embed $(1) sql/000_roles.sql $(sort $(wildcard sql/$(1)/*.sql)) > $$@.tmp && mv $$@.tmp $$@

$(BUILD)/bin/$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard services/$(1)/*.c)) $(BUILD)/obj/gen/$(1)_sql.o $(LIBCOMMON)
	@mkdir -p $$(dir $$@)
	$$(call say,LINK,$$@)
	$$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS) $(if $(filter job-worker,$(1)),$$(VIPS_LIBS))
endef
$(foreach s,$(SERVICES),$(eval $(call service_rules,$(s))))

# The preview sample photo is linked into the worker with .incbin (preview.c).
$(BUILD)/obj/services/job-worker/preview.o: services/job-worker/sample.jpg

$(BUILD)/obj/gen/%_sql.o: $(BUILD)/gen/%_sql.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(LIBCOMMON): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(call say,AR,$@)
	$(Q)rm -f $@
	$(Q)$(AR) rcs $@ $^

# Tests link libcommon.a; a test named after a service (test_worker*, test_cpu_exec*,
# test_poller*, test_gateway*, test_billing*) also links that service's objects
# (all but main.c) and sees its headers.
svc_objs = $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out services/$(1)/main.c,$(wildcard services/$(1)/*.c)))
test_svc = $(strip $(if $(or $(findstring /test_worker,$(1)),$(findstring /test_cpu_exec,$(1))),job-worker) \
             $(if $(findstring /test_poller,$(1)),drive-poller) \
             $(if $(findstring /test_gateway,$(1)),api-gateway) \
             $(if $(findstring /test_billing,$(1)),billing-webhook))

# Test objects (the suites and tests/support) also see tests/support; the
# daemons and libcommon.a never do.
$(BUILD)/obj/tests/%.o: CFLAGS += -Itests/support

define test_rules
$(BUILD)/obj/tests/$(1).o: CFLAGS += $(foreach s,$(call test_svc,$(1)),-Iservices/$(s))
$(BUILD)/tests/$(1): $(BUILD)/obj/tests/$(1).o $(TEST_SUPPORT_OBJ) $(foreach s,$(call test_svc,$(1)),$(call svc_objs,$(s))) $(LIBCOMMON)
	@mkdir -p $$(dir $$@)
	$$(call say,LINK,$$@)
	$$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS) $$(TEST_LIBS) $(if $(filter job-worker,$(call test_svc,$(1))),$$(VIPS_LIBS))
endef
$(foreach t,$(UNIT_SRC:tests/%.c=%) $(INTEG_SRC:tests/%.c=%),$(eval $(call test_rules,$(t))))

tests-build: $(BINS) $(TEST_BINS)

# `make test` and `make run` install what is missing first, then build in a
# fresh make (the compiler flags come from pkg-config, which needs the -dev
# packages that `deps` installs).
test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory -j2 tests-build
	BUILD=$(BUILD) SANITIZE=$(SANITIZE) tests/run

deps:
	@tools/deps.sh

run:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory -j2 all
	@deploy/local/run.sh

run-clean:
	rm -rf var

bench:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory -j2 all
	tests/bench/run

# docs/schema/current.sql: a throwaway PostgreSQL migrated by the binaries, dumped and
# normalised (tools/schema-dump.sh); tests/integration/test_schema_current.sh checks it.
schema-dump: $(BINS)
	BUILD=$(BUILD) tools/schema-dump.sh

# ---- install (docs/operations.md, "Install layout"; deploy/docker/Dockerfile uses it) ----
# Depends on `all`: `make && sudo make install` copies what the user built and
# rebuilds nothing. DESTDIR is a staging root (the image's build stage uses /stage).
PREFIX  ?= /usr/local
DESTDIR ?=
INSTALL ?= install
CA_SCRIPTS := deploy/scripts/ca-migrate deploy/scripts/ca-backup deploy/scripts/ca-restore
WEB_DIR    := services/api-gateway/web
# abspath: the web files are installed from inside their folder (a relative DESTDIR works too)
install_bindir := $(abspath $(DESTDIR)$(PREFIX)/bin)
install_webdir := $(abspath $(DESTDIR)$(PREFIX)/share/creator-automation/web)

install: all
	$(call say,INSTALL,$(install_bindir))
	$(Q)$(INSTALL) -d -m 0755 $(install_bindir)
	$(Q)$(INSTALL) -m 0755 $(BINS) $(CA_SCRIPTS) $(install_bindir)/
	$(call say,INSTALL,$(install_webdir))
	$(Q)rm -rf $(install_webdir)
	$(Q)$(INSTALL) -d -m 0755 $(install_webdir)
	$(Q)cd $(WEB_DIR) && find . -type d ! -name . -exec $(INSTALL) -d -m 0755 $(install_webdir)/{} \; \
	  && find . -type f -exec $(INSTALL) -m 0644 {} $(install_webdir)/{} \;

# The formatter is pinned: Debian 12's clang-format 14 (tools/deps.sh installs
# clang-format-14). Another version formats some constructs differently, so
# format and format-check refuse to run with one.
CLANG_FORMAT ?= clang-format-14
FORMAT_SRC = $(sort $(wildcard common/*.[ch] services/*/*.[ch] tests/*/*.[ch] tools/*.c))
check_clang_format = @$(CLANG_FORMAT) --version 2>/dev/null | grep -q 'version 14\.' || \
  { echo "$@: $(CLANG_FORMAT) is not clang-format 14 (make deps installs clang-format-14)"; exit 2; }

format:
	$(check_clang_format)
	$(CLANG_FORMAT) -i $(FORMAT_SRC)

format-check:
	$(check_clang_format)
	@$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_SRC)
	@echo "format-check: $(words $(FORMAT_SRC)) files as .clang-format says"

# ---- fuzzing (tests/fuzz, docs/fuzzing.md) ----
# libFuzzer targets built with clang under ASan+UBSan into build/fuzz (its own
# objects: build/ and build/san are untouched). `make fuzz` runs each target
# for FUZZ_SECONDS (default 600); `make fuzz-ci` for 30 s each and fails on a
# crash, a leak, a timeout or an out-of-memory. New findings land in
# build/fuzz/findings/<target>/ (the checked-in seeds stay read-only).
FUZZ_CC      ?= clang-14
FUZZ_BUILD   := build/fuzz
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := http_request json_body stripe_signature drive_response graph image_load
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS   = $(CFLAGS) -O1 $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_LIBCOMMON := $(FUZZ_BUILD)/lib/libcommon.a
fuzz_svc_objs = $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(filter-out services/$(1)/main.c,$(wildcard services/$(1)/*.c)))

# What each target links besides libcommon.a (a service's objects, extra flags).
FUZZ_EXTRA_json_body      := $(call fuzz_svc_objs,api-gateway)
FUZZ_EXTRA_image_load     := $(call fuzz_svc_objs,job-worker)
FUZZ_LDEXTRA_image_load   := $(VIPS_LIBS)
FUZZ_LDEXTRA_drive_response := -Wl,--wrap=http_client_do
FUZZ_INC_json_body        := -Iservices/api-gateway
FUZZ_INC_image_load       := -Iservices/job-worker

.PHONY: fuzz fuzz-ci fuzz-build
# The regression test of fuzz_drive_response's findings answers the Google
# client's requests itself, through the same link-time seam.
$(BUILD)/tests/unit/test_drive_parse: LDFLAGS += -Wl,--wrap=http_client_do

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,FUZZCC,$<)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_INC) -c -o $@ $<

$(FUZZ_LIBCOMMON): $(COMMON_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	$(call say,AR,$@)
	$(Q)rm -f $@
	$(Q)$(AR) rcs $@ $^

define fuzz_rules
$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_$(1).o: FUZZ_INC = -Itests/fuzz $(FUZZ_INC_$(1))
$(FUZZ_BUILD)/bin/fuzz_$(1): $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_$(1).o $(FUZZ_EXTRA_$(1)) $(FUZZ_LIBCOMMON)
	@mkdir -p $$(dir $$@)
	$$(call say,LINK,$$@)
	$$(Q)$$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $$@ $$^ $$(LDLIBS) $(FUZZ_LDEXTRA_$(1))
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call fuzz_rules,$(t))))

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/bin/fuzz_%)

fuzz:
	@$(MAKE) --no-print-directory -j2 fuzz-build
	FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run $(FUZZ_TARGETS)

fuzz-ci:
	@$(MAKE) --no-print-directory -j2 fuzz-build
	FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=30 FUZZ_SEED=1 tests/fuzz/run $(FUZZ_TARGETS)

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
