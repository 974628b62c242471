#!/usr/bin/env bash
# The GEMM library picks its AVX-512 kernels at run time (the `x86-v4` feature) and must keep
# machines without AVX-512 correct: runs the parity suites of the model, the samplers and
# training on an emulated Haswell (AVX2, no AVX-512) through Debian's qemu-user.
#
#   scripts/check-avx2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-x86_64 >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null
fi
export MASKDIT_GOLDEN="${MASKDIT_GOLDEN:-tests/golden:tests/golden-uncond}"
for suite in parity_model parity_sampler parity_train; do
  cargo test -q -p maskdit-tests --test "$suite" --no-run
  bin=$(ls -t target/debug/deps/"$suite"-* | grep -v '\.d$' | head -n 1)
  echo "== $suite on an emulated Haswell"
  qemu-x86_64 -cpu Haswell "$bin" 2>&1 | grep -v "TCG doesn't support" | grep -E '^test |test result'
done
