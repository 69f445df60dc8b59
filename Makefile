# ledgerd — see README.md.
GO       ?= go
PKGS     ?= ./...
# Test timeout: the whole suite must stay well under 10 minutes on 2 cores.
TEST_TIMEOUT ?= 9m

.PHONY: run test bench lint fuzz build

run:
	$(GO) run ./cmd/ledgerd

build:
	$(GO) build -o bin/ ./cmd/...

test: lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

# Figures quoted in README.md. Each line of output names what it measures.
bench:
	@echo "== API-key verification on the hot path (1k and 100k keys loaded)"
	$(GO) test -run '^$$' -bench Verify -benchmem ./projections/keyindex
	@echo "== HTTP top-ups/s, revoke-to-rejection on a second instance"
	$(GO) test -run '^$$' -bench 'TopUpHTTP|RevokeToRejection' -benchtime 3s ./adapters/app
	@echo "== start-up time (fresh data dir, restart on existing data)"
	$(GO) test -run '^$$' -bench Startup -benchtime 3x ./adapters/app

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s ./domain/money
