#!/bin/sh
# One-shot (compose service temporal-setup, image temporalio/admin-tools), once the server answers:
# the namespace (with its history retention) and the six search attributes GenerationWorkflow
# upserts (imagegen/visibility.py; the worker refuses to start without them). Idempotent.
# Waits at most TEMPORAL_SETUP_TIMEOUT seconds (default 300) in all, for the server and then for a
# new namespace to become usable (the server's namespace cache), and exits 1 saying which it was.
set -eu
: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}"
timeout=${TEMPORAL_SETUP_TIMEOUT:-300}
case $timeout in
  '' | *[!0-9]*) echo "temporal setup: TEMPORAL_SETUP_TIMEOUT must be whole seconds, got '$timeout'" >&2; exit 2 ;;
esac
deadline=$(($(date +%s) + timeout))

# retry_until WHAT COMMAND...: run COMMAND every 2 s until it succeeds, or exit 1 at the deadline.
retry_until() {
  what=$1
  shift
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "temporal setup: gave up after ${timeout}s (TEMPORAL_SETUP_TIMEOUT): $what" >&2
      exit 1
    fi
    echo "waiting: $what"
    sleep 2
  done
}

retry_until "no healthy Temporal server at $TEMPORAL_ADDRESS" temporal operator cluster health --command-timeout 10s
temporal operator namespace describe --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1 ||
  temporal operator namespace create --namespace "$TEMPORAL_NAMESPACE" --retention "${TEMPORAL_HISTORY_RETENTION:-7d}"
retry_until "namespace $TEMPORAL_NAMESPACE not usable at $TEMPORAL_ADDRESS" \
  temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE" --command-timeout 10s
for attr in TelegramUserId:Int TelegramChatId:Int KieTaskId:Keyword GenerationState:Keyword \
            ImageModel:Keyword DeliveryLevel:Keyword; do
  name=${attr%%:*} type=${attr##*:}
  if temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" --name "$name" --type "$type"
  fi
done
echo "temporal setup: namespace $TEMPORAL_NAMESPACE and search attributes ready"
