# hull — every target works on a fresh Debian 12 host as root. `make test` installs what it needs by itself.
SHELL := /bin/bash
.DEFAULT_GOAL := build

# Debian packages hull needs on the host, derived from scripts/host-programs.mjs: the one list of every program hull,
# the guest image builder, the tests and the benchmarks run (containerd, QEMU, virtiofsd, ip, iptables, nft, crun, ...),
# each with its package, plus the packages needed otherwise (the guest kernel, libc6-dev, node-gyp's g++ and python3).
# scripts/test/host-programs.test.ts checks that every program spawned anywhere in the tree is on that list.
APT_PACKAGES := $(or $(shell node scripts/host-programs.mjs packages),$(error scripts/host-programs.mjs printed no packages (is node installed?)))
MOCHA := node_modules/.bin/mocha --reporter scripts/mocha-summary-reporter.js
UNIT_TESTS := 'ttrpc/dist/test/**/*.test.js' 'vsock/dist/test/**/*.test.js' 'netns/dist/test/**/*.test.js' 'dist/{errors,dbus,protos,shim,core,hypervisor,agent-client,fs-share,agent,guest,scripts,monitor,cli}/test/**/*.test.js'
INTEGRATION_TESTS := 'dist/integration/**/*.test.js'

.PHONY: deps containerd2 apt-deps apt-packages npm-deps addon build protos check-layers lint test test-unit test-integration bench guest install demo clean fuzz format

deps: apt-deps npm-deps containerd2

# containerd 2.x beside Debian's 1.6 (the tests run against both): Debian sid's build, verified (gpgv, SHA256) and
# unpacked into /var/cache/hull/containerd-<version>/bin, /var/cache/hull/containerd-2 -> it. Nothing to do (and no
# network) once there. HULL_CACHE_DIR=... puts it elsewhere.
containerd2: apt-deps
	node scripts/containerd2.mjs

# Idempotent and quick when everything is present: one dpkg-query for all, and apt runs only for packages missing.
apt-deps:
	@missing=$$(dpkg-query -W -f='$${Package} $${db:Status-Abbrev}\n' $(APT_PACKAGES) 2>/dev/null | awk '$$2 == "ii" { ok[$$1] = 1 } END { n = split("$(APT_PACKAGES)", want, " "); for (i = 1; i <= n; i++) if (!(want[i] in ok)) print want[i] }'); \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The package list as make sees it (the unit test compares it with scripts/host-programs.mjs).
apt-packages:
	@echo $(APT_PACKAGES)

npm-deps: node_modules/.deps-stamp
# node-gyp compiles against the installed node's headers when it has them (no download).
node_modules/.deps-stamp: package.json package-lock.json ttrpc/package.json vsock/package.json netns/package.json
	$(if $(wildcard /usr/include/node/node.h),npm_config_nodedir=/usr) npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The addons of hull-vsock and hull-netns: npm ci builds them (node-gyp); this rebuilds one when its C source
# changes afterwards.
addon: vsock/build/Release/hull_vsock.node netns/build/Release/hull_netns.node
vsock/build/Release/hull_vsock.node: vsock/src/vsock.c vsock/src/console.c vsock/src/console.h vsock/binding.gyp | npm-deps
	npm run install --workspace=hull-vsock --loglevel=error
netns/build/Release/hull_netns.node: netns/src/netns.c netns/binding.gyp | npm-deps
	npm run install --workspace=hull-netns --loglevel=error

build: npm-deps protos addon
	node_modules/.bin/tsc -b
	node scripts/check-layers.mjs

protos: npm-deps
	node scripts/gen-protos.mjs

# Style is the formatter's (prettier, width 120: .prettierrc.json), not a reviewer's: `make format` rewrites, `make
# lint` fails on any file it would change.
FORMATTED := '**/*.{ts,mjs,js}'
lint: build
	node_modules/.bin/eslint .
	node_modules/.bin/prettier --check --log-level warn $(FORMATTED)

format: npm-deps
	node_modules/.bin/prettier --write --log-level warn $(FORMATTED)

test-unit: build
	$(MOCHA) --timeout 20000 $(UNIT_TESTS)

test-integration: deps build guest
	$(MOCHA) --timeout 300000 --slow 10000 $(INTEGRATION_TESTS)

# One mocha run over both suites, so that its summary covers everything.
test: deps build lint guest
	$(MOCHA) --timeout 300000 --slow 10000 $(UNIT_TESTS) $(INTEGRATION_TESTS)

# Seeded fuzzing, not part of `make test`: 10^6 byte streams through the ttrpc frame decoder and 10^6 frames each
# through ttrpc's server, the shim's Task server and the agent's server. FUZZ_SEED=N replays another run.
FUZZ_ITERATIONS ?= 1000000
FUZZ_SEED ?= 1
fuzz: build
	node --expose-gc ttrpc/dist/test/fuzz.js --iterations $(FUZZ_ITERATIONS) --seed $(FUZZ_SEED)
	node --expose-gc dist/shim/test/fuzz.js --iterations $(FUZZ_ITERATIONS) --seed $(FUZZ_SEED)
	node --expose-gc dist/agent/test/fuzz.js --iterations $(FUZZ_ITERATIONS) --seed $(FUZZ_SEED)

# BENCH="pods citizen" runs only those (the names of bench/run.ts); empty: every one.
BENCH ?=
bench: deps build guest
	node dist/bench/run.js $(BENCH)

# The guest image (guest/out/: vmlinuz, initrd.img, rootfs.img, manifest.json). Rebuilt only when an input changed.
guest: deps build
	node dist/guest/build.js

# Installs the shim, the guest artefacts and the default configuration (PREFIX=/usr/local, ETC=/etc/hull), and
# prints the containerd config.toml fragment and a RuntimeClass.
PREFIX ?= /usr/local
ETC ?= /etc/hull
install: deps build guest
	node scripts/install.mjs --prefix $(PREFIX) --etc $(ETC)

# A private containerd with hull as a runtime runs one container in a VM; nothing is left afterwards.
demo: deps build guest
	node dist/integration/demo.js

clean:
	rm -rf dist ttrpc/dist vsock/dist vsock/build netns/dist netns/build protos/gen bench/out guest/out
