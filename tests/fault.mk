# tests/fault.mk - the fault-injection suite (tests/check_fault.c): the
# codec's and the store's allocations and I/O fail in turn.
#
# --wrap reroutes these calls of every object linked in statically (the
# suite, the convenience libraries, check) to the suite's __wrap_*
# functions; LMDB's disk calls are interposed by the suite instead (see the
# top of check_fault.c), which needs nothing here.
if HAVE_CHECK
check_PROGRAMS += tests/check_fault
TESTS += tests/check_fault
tests_check_fault_SOURCES = tests/check_fault.c tests/testutil.h
tests_check_fault_CFLAGS = $(CHECK_CFLAGS_ALL)
tests_check_fault_LDFLAGS = $(AM_LDFLAGS) \
	-Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc \
	-Wl,--wrap=strdup -Wl,--wrap=asprintf -Wl,--wrap=vasprintf \
	-Wl,--wrap=read -Wl,--wrap=write -Wl,--wrap=poll \
	-Wl,--wrap=getrandom -Wl,--wrap=mkdir -Wl,--wrap=openat
tests_check_fault_LDADD = libpyshelfstore.la libpyshelfwire.la \
	$(CHECK_LIBS) $(PTHREAD_LIBS)
endif
