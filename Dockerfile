# jobq in a container: built on Debian, run from a small image that holds
# only the runtime libraries, the tools, the migrations, the example
# handlers, socat (the super-server jobq-httpd runs under) and curl (the
# healthchecks).

FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make pkg-config \
    libc6-dev librabbitmq-dev libpq-dev libjson-c-dev uuid-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make clean && make PREFIX=/usr/local \
 && make install PREFIX=/usr/local DESTDIR=/out

FROM debian:12
RUN apt-get update \
 && apt-get install -y --no-install-recommends librabbitmq4 libpq5 \
    libjson-c5 libuuid1 socat curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --home-dir /nonexistent jobq
COPY --from=build /out/usr/local /usr/local
USER jobq
