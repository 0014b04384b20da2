#!/usr/bin/env bash
# Entrypoint of the beamsplitter images: beamsplitter's own commands run the CLI; anything else
# (Dataflow's worker arguments --id=... --control_endpoint=..., or --worker_pool on Flink) is handed
# to the Beam SDK harness, which must be the container's last step.
#
#   entrypoint.sh run --manifest gs://b/catalogue.csv --output gs://b/stems -p spleeter:4stems
#   entrypoint.sh --worker_pool
#
# BEAM_BOOT and BEAMSPLITTER name the two programs (defaults: the image's); tests point them elsewhere.
set -euo pipefail

boot=${BEAM_BOOT:-/opt/apache/beam/boot}
beamsplitter=${BEAMSPLITTER:-beamsplitter}

case "${1:-}" in
  run | plan | separate | export-model | demo-catalogue)
    exec "$beamsplitter" "$@"
    ;;
  *)
    exec "$boot" "$@"
    ;;
esac
