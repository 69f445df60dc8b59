# ledgerd — see README.md.
GO       ?= go
PKGS     ?= ./...
# Test timeout: the whole suite must stay well under 10 minutes on 2 cores.
TEST_TIMEOUT ?= 9m

.PHONY: run test bench lint fuzz fuzz-run build cluster faults faults-short

run:
	$(GO) run ./cmd/ledgerd

# A local 3-node NATS cluster, Postgres and two ledgerd instances (see README).
cluster:
	$(GO) run ./cmd/ledgerd-cluster

# Every fault scenario at full length (make test runs a short version).
faults:
	LEDGER_FAULTS_FULL=1 $(GO) test -tags faults -race -count=1 -timeout 30m -run 'TestFaults' -v ./cmd/ledgerd-cluster
	$(GO) test -tags faults -race -count=1 -timeout 5m -run 'TestQuorumLoss' -v ./adapters/app

faults-short:
	$(GO) test -tags faults -race -count=1 -timeout 15m -run 'TestFaults' -v ./cmd/ledgerd-cluster
	$(GO) test -tags faults -race -count=1 -timeout 5m -run 'TestQuorumLoss' -v ./adapters/app

build:
	$(GO) build -o bin/ ./cmd/...

# Every fuzz target as "<name> <package>". make test runs each briefly
# (its committed corpus, then FUZZ_SHORT new inputs: a count, not a time,
# since a short -fuzztime can run out while a loaded machine is still
# replaying the corpus, and go test then fails with "context deadline
# exceeded"); make fuzz runs each for FUZZ_LONG. go test -fuzz takes one
# target and one package at a time.
FUZZ_TARGETS = \
	FuzzParse:./domain/money \
	FuzzAccountInvariants:./domain/account \
	FuzzEncodingMatchesEncodingJSON:./ledger/eventstore \
	FuzzDecodeCommitMatchesEncodingJSON:./ledger/eventstore \
	FuzzEventDecodingMatchesEncodingJSON:./ledger \
	FuzzDecodeBodies:./adapters/httpapi \
	FuzzDuplicateKeysMatchesTokenScan:./adapters/httpapi \
	FuzzCredential:./adapters/httpapi \
	FuzzKeyParse:./projections/keyindex
FUZZ_SHORT ?= 3000x
FUZZ_LONG  ?= 2m

test: lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	@$(MAKE) --no-print-directory fuzz-run FUZZTIME=$(FUZZ_SHORT)

fuzz:
	@$(MAKE) --no-print-directory fuzz-run FUZZTIME=$(FUZZ_LONG)

fuzz-run:
	@set -e; for t in $(FUZZ_TARGETS); do \
		name=$${t%%:*}; pkg=$${t#*:}; \
		echo "== fuzz $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# Figures quoted in README.md. Each block says what it measures.
bench:
	@echo "== API-key verification on the hot path (1k and 100k keys loaded)"
	$(GO) test -run '^$$' -bench Verify -benchmem ./projections/keyindex
	@echo "== command side alone: reserve + capture through JetStream (no HTTP, no read models)"
	$(GO) test -run '^$$' -bench ReserveCapture -benchtime 3s ./ledger
	@echo "== over HTTP: charged calls (hot account, 1,000 accounts) beside raw JetStream publish-with-ack;"
	@echo "   admin top-ups; revoke on one instance to rejection on another"
	$(GO) test -run '^$$' -bench 'ChargedCalls|TopUpHTTP|RevokeToRejection' -benchtime 4s ./adapters/app
	@echo "== rebuild of every read model from 1,000,000 events (POST /api/admin/projections/replay)"
	$(GO) test -run '^$$' -bench Replay -benchtime 1x -timeout 20m ./projections
	@echo "== live streams: 1,000 idle SSE subscribers (heap and stack per subscriber)"
	$(GO) test -run '^$$' -bench IdleStreams -benchtime 1x ./adapters/app
	@echo "== start-up time (fresh data dir, restart on existing data)"
	$(GO) test -run '^$$' -bench Startup -benchtime 3x ./adapters/app
	@echo "== cluster: two ledgerd instances on a 3-node JetStream cluster (3 replicas) vs one on the embedded server; a killed NATS node replaced"
	$(GO) test -run '^$$' -bench Cluster -benchtime 1x -timeout 15m ./cmd/ledgerd-cluster

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

