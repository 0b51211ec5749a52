.PHONY: test vet bench-ledger

# The whole suite: starts its own private PostgreSQL and in-process NATS.
test:
	go test -race -timeout 25m ./...

vet:
	go vet ./...
