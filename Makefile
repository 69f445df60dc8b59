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

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s -benchmem $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s ./domain/money
