# The two set-up commands (README): `make run` and `make test`.
.PHONY: run test deps bench-ingest

# run: the service on local defaults (ledger dev: database, secret and all).
run:
	go run ./cmd/ledger dev

# test: the whole suite against a real PostgreSQL and headless Chromium.
# -p 1: the xid8 read gate is cluster-wide, so an open transaction in one
# package's tests would hold back reads in another's.
# deps installs and starts them when missing (as root, Debian), and NATS
# with JetStream on 127.0.0.1:4222 (Debian's nats-server).
test: deps
	go vet ./...
	go test -p 1 -count=1 -timeout 25m ./...

deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@# axe-core (npm) for the browser tests' accessibility checks; the lock file pins it. No browser is downloaded.
	@command -v npm >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	@[ -f handlers/testdata/axe/node_modules/axe-core/axe.min.js ] || npm ci --prefix handlers/testdata/axe --no-audit --no-fund --ignore-scripts >/dev/null
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; echo "PostgreSQL did not start"; exit 1
	@# NATS with JetStream (the relay's tests start their own nats-server; this one is for ledger relay)
	@command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null; }
	@bash -c '</dev/tcp/127.0.0.1/4222' 2>/dev/null || { mkdir -p /var/tmp/ledger-nats && setsid $$(command -v nats-server || echo /usr/sbin/nats-server) -a 127.0.0.1 -p 4222 -js -sd /var/tmp/ledger-nats </dev/null >/var/tmp/ledger-nats.log 2>&1 & }
	@for i in $$(seq 1 30); do bash -c '</dev/tcp/127.0.0.1/4222' 2>/dev/null && exit 0; sleep 0.5; done; echo "nats-server did not start (/var/tmp/ledger-nats.log)"; exit 1

bench-ingest:
	go run ./cmd/ledger bench ingest --concurrency 32 --duration 20s --baseline
