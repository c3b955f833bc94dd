"""The report reads the event log a segment at a time (one JSON decode per segment); a
segment with a torn or garbled line still yields every good line, in time order."""

from __future__ import annotations

import json

from spotsafe.events import read_events
from spotsafe.storage import open_store


def test_garbled_lines_are_skipped_and_the_rest_kept(tmp_path: object) -> None:
    store = open_store(f"memory://spotsafe-report-events-{id(tmp_path)}")
    good = [{"t": float(t), "kind": "heartbeat", "attempt": 1, "step": t} for t in range(5)]
    lines = [json.dumps(e) for e in good]
    body = "\n".join([lines[0], "", lines[1], '{"t": 9, "kind": "torn', lines[2], "[1, 2]",
                      '{"kind": "no time"}', lines[3], "3, 4", lines[4]]) + "\n"  # fmt: skip
    store.write_bytes("events/attempt-000001-00000000/000001.jsonl", body.encode())
    store.write_bytes(
        "events/attempt-000001-00000000/000002.jsonl",
        (json.dumps({"t": 2.5, "kind": "save", "attempt": 1, "step": 2}) + "\n").encode(),
    )
    events = read_events(store)
    assert [(e.t, e.kind) for e in events] == [
        (0.0, "heartbeat"), (1.0, "heartbeat"), (2.0, "heartbeat"), (2.5, "save"),
        (3.0, "heartbeat"), (4.0, "heartbeat"),
    ]  # fmt: skip
    assert [e.get("step") for e in events] == [0, 1, 2, 2, 3, 4]
    assert all(e.attempt == 1 and "t" not in e.fields for e in events)
