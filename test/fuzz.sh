#!/usr/bin/env bash
# Runs every fuzz target of kpath for FUZZTIME each (default 5s: the short
# run `make test` does; `make fuzz` runs 2m each). A target that finds a
# crash fails the run; go test writes the input to testdata/fuzz/<target>/,
# which is committed as a regression seed once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-5s}
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
