#!/bin/sh
# One-shot (compose service temporal-setup, image temporalio/admin-tools), once the server answers:
# the namespace (with its history retention) and the six search attributes GenerationWorkflow
# upserts (imagegen/visibility.py; the worker refuses to start without them). Idempotent.
set -eu
: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}"
until temporal operator cluster health >/dev/null 2>&1; do echo "waiting for $TEMPORAL_ADDRESS"; sleep 2; done
temporal operator namespace describe --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1 ||
  temporal operator namespace create --namespace "$TEMPORAL_NAMESPACE" --retention "${TEMPORAL_HISTORY_RETENTION:-7d}"
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
