"""Reading a workflow history in tests: which activities ran, in order, local ones included."""

from __future__ import annotations

import json

LOCAL_MARKER = "core_local_activity"


def activity_types(history, *, local: bool = True) -> list[str]:
    """The activity types in the order the workflow scheduled them: a local activity (the lean shape's
    recordInfo poll) is in the history as a marker, named here with a " (local)" suffix."""
    out = []
    for e in history.events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            out.append(e.activity_task_scheduled_event_attributes.activity_type.name)
        elif local and e.HasField("marker_recorded_event_attributes"):
            marker = e.marker_recorded_event_attributes
            if marker.marker_name == LOCAL_MARKER:
                out.append(json.loads(marker.details["data"].payloads[0].data)["activity_type"] + " (local)")
    return out
