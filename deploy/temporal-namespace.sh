#!/bin/sh
# One-shot job (temporalio/admin-tools): the application's namespace, with its retention (how long
# a closed workflow's history is kept), created once and its retention kept as configured.
set -eu

until temporal operator cluster health --address "${TEMPORAL_ADDRESS}" >/dev/null 2>&1; do
  echo "waiting for Temporal"; sleep 2
done
if temporal operator namespace describe --namespace "${NAMESPACE}" --address "${TEMPORAL_ADDRESS}" >/dev/null 2>&1; then
  temporal operator namespace update --namespace "${NAMESPACE}" --retention "${RETENTION}" --address "${TEMPORAL_ADDRESS}"
else
  temporal operator namespace create --namespace "${NAMESPACE}" --retention "${RETENTION}" --address "${TEMPORAL_ADDRESS}"
fi
echo "namespace ${NAMESPACE} ready (retention ${RETENTION})"
