#!/usr/bin/env bash
# Runs every fuzz target of kpath for FUZZTIME each (default 10000x, 10000
# inputs: the short run `make test` does, 1-15 s a target here; `make fuzz`
# runs 2m each). A target that finds a crash fails the run; go test writes
# the input to testdata/fuzz/<target>/, which is committed as a regression
# seed once fixed. The short run counts inputs rather than time: with a
# duration, Go 1.26's fuzz coordinator can fail a run at its deadline with
# a bare "context deadline exceeded" and no input (golang/go#75804, fixed in
# Go 1.27); seen here in CI on FuzzOpenBinary.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10000x}
targets=(
	"./probes FuzzOpenBinary"
	"./probes FuzzInstructionLength"
	"./probes FuzzDecodeEvent"
	"./export FuzzPartialSuccess"
	"./correlate FuzzParseKey"
)
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "=== fuzz $name ($pkg, $fuzztime)"
	# -parallel 1: a short run on 2 cores should not starve the rest.
	go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -parallel "${FUZZ_PARALLEL:-1}" "$pkg"
done
