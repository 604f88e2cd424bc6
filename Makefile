# jobq: a job queue made of small tools over RabbitMQ and PostgreSQL.

PREFIX ?=	/usr/local
BINDIR ?=	$(PREFIX)/bin
MANDIR ?=	$(PREFIX)/share/man
SQLDIR ?=	$(PREFIX)/share/jobq/sql
LIBEXECDIR ?=	$(PREFIX)/libexec/jobq
HANDLERDIR ?=	$(LIBEXECDIR)/handlers

PKGS =		librabbitmq libssl libpq json-c uuid
PKG_CFLAGS !=	pkg-config --cflags $(PKGS) 2>/dev/null
PKG_LIBS !=	pkg-config --libs $(PKGS) 2>/dev/null

CC ?=		cc
CFLAGS ?=	-O2 -g
WARNINGS =	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
		-Wmissing-prototypes -Wformat=2 -Wno-format-nonliteral \
		-Wpointer-arith -Wcast-qual -Wvla
JOBQ_CFLAGS =	-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
		$(WARNINGS) -Ilib $(PKG_CFLAGS)

# make SAN=1 ...: build with AddressSanitizer (leak checks included) and
# UndefinedBehaviorSanitizer; make check SAN=1 fails on any report.
# clang builds it, since GCC's UBSan writes its reports only to stderr,
# where a test that expects a failure would not notice them.
SAN ?=		0
SAN_CC ?=	clang
SAN_FLAGS_1 =	-fsanitize=address,undefined -fno-sanitize-recover=all \
		-fno-omit-frame-pointer
SAN_FLAGS =	$(SAN_FLAGS_$(SAN))
BUILD_CC_0 =	$(CC)
BUILD_CC_1 =	$(SAN_CC)
BUILD_CC =	$(BUILD_CC_$(SAN))
BUILD_CFLAGS =	$(JOBQ_CFLAGS) $(CFLAGS) $(SAN_FLAGS)

TOOLS =		jobq-migrate jobq-submit jobq-work jobq-store jobq-result \
		jobq-httpd jobq-dead jobq-stat
BINS =		$(TOOLS:%=bin/%)
LIBOBJS =	lib/amqp.o lib/db.o lib/err.o lib/http.o lib/job.o lib/json.o \
		lib/mgmt.o
LIB =		lib/libjobq.a
MANS1 =		man/jobq-migrate.1 man/jobq-submit.1 man/jobq-work.1 \
		man/jobq-store.1 man/jobq-result.1 man/jobq-stack.1 \
		man/jobq-dead.1 man/jobq-stat.1
MANS =		man/jobq.7 man/jobq-httpd.8 $(MANS1)
HANDLERS =	handlers/echo handlers/echo-persistent handlers/fail \
		handlers/sha256 handlers/sleep

# libFuzzer targets, built with clang from the library's sources.
FUZZ_CC ?=	clang
FUZZ_FLAGS =	-g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all
FUZZ_TIME ?=	60
FUZZERS =	fuzz/doc fuzz/http fuzz/message

all: $(BINS)

$(LIB): $(LIBOBJS)
	$(AR) rcs $@ $(LIBOBJS)

lib/%.o: lib/%.c lib/jobq.h lib/build.flags
	$(BUILD_CC) $(BUILD_CFLAGS) -c -o $@ $<

# The paths compiled in follow PREFIX, and everything follows the
# compiler and its flags: a change of either rebuilds.
lib/paths.h: FORCE
	@echo '#define JOBQ_SQLDIR "$(SQLDIR)"' >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@

lib/build.flags: FORCE
	@echo '$(BUILD_CC) $(BUILD_CFLAGS) $(LDFLAGS)' >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@

bin/jobq-migrate: lib/paths.h

# The dashboard is plain HTML in lib/dashboard.html, which becomes the
# text of a C string here.
lib/dashboard.inc: lib/dashboard.html
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' \
	    lib/dashboard.html >$@

bin/jobq-httpd: lib/dashboard.inc

bin/%: bin/%.c $(LIB) lib/jobq.h lib/build.flags
	$(BUILD_CC) $(BUILD_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(PKG_LIBS)

test/unit test/qtool test/ceiling: $(LIB) lib/jobq.h lib/build.flags
	$(BUILD_CC) $(BUILD_CFLAGS) $(LDFLAGS) -o $@ $@.c $(LIB) $(PKG_LIBS)

test/unit: test/unit.c
test/qtool: test/qtool.c
test/ceiling: test/ceiling.c

$(FUZZERS): $(LIBOBJS:.o=.c) lib/jobq.h
	$(FUZZ_CC) $(JOBQ_CFLAGS) $(FUZZ_FLAGS) -o $@ $@.c \
	    $(LIBOBJS:.o=.c) $(PKG_LIBS)

fuzz/doc: fuzz/doc.c
fuzz/http: fuzz/http.c
fuzz/message: fuzz/message.c

fuzz: $(FUZZERS)
	scripts/fuzz -t $(FUZZ_TIME)

demo:
	scripts/demo

bench: all test/ceiling test/qtool
	scripts/jobq-bench

check: all test/unit test/qtool test/ceiling
	scripts/deps
	SAN=$(SAN) test/run

lint:
	cd man && mandoc -Tlint -Wstyle $(MANS:man/%=%)

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	    $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(SQLDIR) $(DESTDIR)$(HANDLERDIR)
	install -m 755 $(BINS) $(DESTDIR)$(BINDIR)
	install -m 644 $(MANS1) $(DESTDIR)$(MANDIR)/man1
	install -m 644 man/jobq.7 $(DESTDIR)$(MANDIR)/man7
	install -m 644 man/jobq-httpd.8 $(DESTDIR)$(MANDIR)/man8
	install -m 644 sql/*.sql $(DESTDIR)$(SQLDIR)
	install -m 755 $(HANDLERS) $(DESTDIR)$(HANDLERDIR)
	install -m 755 scripts/jobq-stack $(DESTDIR)$(BINDIR)
	install -m 755 scripts/httpd-tcp scripts/fresh $(DESTDIR)$(LIBEXECDIR)

uninstall:
	rm -f $(TOOLS:%=$(DESTDIR)$(BINDIR)/%) $(DESTDIR)$(BINDIR)/jobq-stack \
	    $(DESTDIR)$(LIBEXECDIR)/httpd-tcp $(DESTDIR)$(LIBEXECDIR)/fresh \
	    $(MANS1:man/%=$(DESTDIR)$(MANDIR)/man1/%) \
	    $(DESTDIR)$(MANDIR)/man7/jobq.7 \
	    $(DESTDIR)$(MANDIR)/man8/jobq-httpd.8 \
	    $(HANDLERS:handlers/%=$(DESTDIR)$(HANDLERDIR)/%)
	rm -f $(DESTDIR)$(SQLDIR)/*.sql
	-rmdir $(DESTDIR)$(SQLDIR) $(DESTDIR)$(HANDLERDIR) \
	    $(DESTDIR)$(PREFIX)/share/jobq $(DESTDIR)$(PREFIX)/libexec/jobq

clean:
	rm -f $(BINS) $(LIBOBJS) $(LIB) lib/paths.h lib/build.flags \
	    lib/dashboard.inc \
	    test/unit test/qtool test/ceiling $(FUZZERS)

.PHONY: all bench check demo fuzz lint install uninstall clean FORCE
