# lego: two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Missing apt packages (busybox-static, musl-tools, build tools) are installed by
# scripts/install-deps.sh.

CARGO ?= cargo
LEGO := target/release/lego

.PHONY: all deps build guest-images demo test bench clean

all: build guest-images

deps:
	@bash scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

guest-images: deps
	$(MAKE) -C guest-images

demo: build guest-images
	@echo "== a static C program in a vNode"
	$(LEGO) run guest-images/out/hello
	@echo "== Debian's unmodified busybox-static in a vNode, counting the words of README.md"
	$(LEGO) run guest-images/out/busybox wc README.md
	@echo "== 64 MiB random-access checksum in a vNode, then natively"
	$(LEGO) run guest-images/out/checksum 64
	guest-images/out/checksum 64
	@echo "== sorting 8 MiB through a 4 MiB ExCache: the rest lives on a mem-server (embedded, loopback)"
	$(LEGO) run --excache 4M --stats guest-images/out/sort 1000000 3
	@echo "== this machine's own dynamically linked bash, sort and perl (ld.so and libraries from --root /), through an 8 MiB ExCache"
	$(LEGO) run --excache 8M --root / /bin/bash -c 'seq 1 100000 | sort -rn | head -2; perl -e "print qq(perl \$$^V\n)"'
	@echo "== busybox sh in a vNode: a pipeline of three processes, each its own VM"
	$(LEGO) run guest-images/out/busybox sh -c 'seq 1 1000 | sort -rn | head -3; echo status $$?'
	@echo "== a map-reduce word count with 2 threads, each a vCPU, through a 2 MiB ExCache"
	$(LEGO) run --excache 2M --stats guest-images/out/wordcount guest-images/out/words.txt 2
	@echo "== a whole cluster on this machine: lego up, a vNode, its image on a storage server, lego ps, lego down"
	@export LEGO_STATE_DIR=$$(mktemp -d) && trap '$(LEGO) down >/dev/null 2>&1; rm -rf $$LEGO_STATE_DIR' EXIT && \
	  $(LEGO) up && \
	  $(LEGO) vnode create demo --excache 16M && \
	  $(LEGO) image push guest-images/out/image --vnode demo && \
	  $(LEGO) run --vnode demo /bin/busybox wc -l /data/lines.txt && \
	  $(LEGO) ps

test: build guest-images
	$(CARGO) test --release --workspace

bench: build guest-images
	$(LEGO) bench syscall
	$(LEGO) bench fault
	$(LEGO) bench throughput
	$(LEGO) bench slowdown
	$(LEGO) bench storage
	$(LEGO) bench threads
	$(LEGO) bench apps

clean:
	$(CARGO) clean
	$(MAKE) -C guest-images clean
