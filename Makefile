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
	@echo "== files on a storage server: push the guest image into vNode demo, run busybox from it"
	@dir=$$(mktemp -d) && trap 'kill $$pid 2>/dev/null; rm -rf $$dir' EXIT && \
	  { $(LEGO) storage-server --listen 127.0.0.1:0 --dir $$dir/storage > $$dir/addr & pid=$$!; } && \
	  n=0 && until grep -q listening $$dir/addr 2>/dev/null; do \
	    n=$$((n+1)); [ $$n -lt 100 ] || { echo "storage-server did not start" >&2; exit 1; }; sleep 0.1; done && \
	  addr=$$(awk '{ print $$NF }' $$dir/addr) && \
	  $(LEGO) image push guest-images/out/image --vnode demo --storage-server $$addr && \
	  $(LEGO) run --vnode demo --storage-server $$addr /bin/busybox wc -l /data/lines.txt

test: build guest-images
	$(CARGO) test --release --workspace

bench: build guest-images
	$(LEGO) bench syscall
	$(LEGO) bench fault
	$(LEGO) bench throughput
	$(LEGO) bench slowdown
	$(LEGO) bench storage

clean:
	$(CARGO) clean
	$(MAKE) -C guest-images clean
