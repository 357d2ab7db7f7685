# Convenience targets. CI runs .ci/run (the README's test command plus checks); the long runs below are
# not part of CI.
.PHONY: test ci fuzz reliability bench compose-test compose-cluster-test proxy-test browser-test

test:
	go vet ./... && go test -race ./...

ci:
	bash .ci/run

# Long fuzzing of the SCIM filter parser, PATCH applier and bodies (FUZZTIME per target).
FUZZTIME ?= 10m
fuzz:
	go test -run=NONE -fuzz=FuzzParse$$ -fuzztime=$(FUZZTIME) ./services/scim-ingest/scimfilter
	go test -run=NONE -fuzz=FuzzParsePath -fuzztime=$(FUZZTIME) ./services/scim-ingest/scimfilter
	go test -run=NONE -fuzz=FuzzApply -fuzztime=$(FUZZTIME) ./services/scim-ingest/scimpatch
	go test -run=NONE -fuzz=FuzzUsersBody -fuzztime=$(FUZZTIME) -fuzzminimizetime=10s ./services/scim-ingest
	go test -run=NONE -fuzz=FuzzGroupsBody -fuzztime=$(FUZZTIME) -fuzzminimizetime=10s ./services/scim-ingest

# The long fault-injection run (many kill iterations, cluster scenarios); CI runs the short version.
reliability:
	SCIMFLOW_RELIABILITY_LONG=1 go test -race -timeout 60m -v ./reliability/

bench:
	go test -run=NONE -bench=. -benchtime=2s ./...

# The compose stack in a real Docker engine (reliability/compose_test.go, build tag compose: not
# part of go test ./...). Needs a Docker engine (DOCKER_HOST), docker-compose, busybox-static and
# prometheus; .ci/run installs them and starts a private dockerd around this target.
compose-test:
	go test -tags compose -run '^TestCompose(Stack|Attack|Cluster|ClusterRoutes|BuildContext)$$' -count=1 -timeout 40m -v ./reliability/

# Only the cluster variant (compose.cluster.yaml: SCIM leader killed, auth-2 cut from NATS); it is
# part of compose-test too.
compose-cluster-test:
	go test -tags compose -run '^TestComposeCluster$$' -count=1 -timeout 40m -v ./reliability/

# The reverse-proxy snippets of docs/reverse-proxies.md and docs/getting-started.md in Debian's nginx
# and Caddy in front of scimflow serve (e2e/proxies_test.go, build tag proxies).
proxy-test:
	go test -tags proxies -run '^TestProxySnippets$$' -count=1 -timeout 10m -v ./e2e/

# The admin console in a real browser (e2e/browser, build tag browser: not part of go test ./...).
# Needs Debian's chromium (.ci/run installs it); CHROMIUM=/path overrides the binary. Screenshots of
# each page land in $$TMPDIR/scimflow-console (or CONSOLE_SCREENSHOTS=dir).
browser-test:
	go test -tags browser -count=1 -timeout 15m -v ./e2e/browser/
