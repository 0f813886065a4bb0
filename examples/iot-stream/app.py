"""Temperature statistics per device over a batch of readings: `app.handler`, invoked by
a queue trigger with messages of a JetStream stream.

Each record's body is a reading, {"device": "d-1", "temperature": 21.5, "ts": "..."}. The
answer gives each device's count, min, max and mean temperature in the batch, and names the
records that hold no reading in `batchItemFailures` (Lambda's partial batch response): fargo
acknowledges the others and delivers those again.
"""

import json
import math


def handler(event, context):
    devices, failures = {}, []
    for record in event["Records"]:
        reading = parse(record["body"])
        if reading is None:
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        device, temperature = reading
        stats = devices.setdefault(
            device, {"count": 0, "min": temperature, "max": temperature, "sum": 0.0}
        )
        stats["count"] += 1
        stats["min"] = min(stats["min"], temperature)
        stats["max"] = max(stats["max"], temperature)
        stats["sum"] += temperature
    return {
        "devices": {
            device: {
                "count": stats["count"],
                "min": stats["min"],
                "max": stats["max"],
                "mean": round(stats["sum"] / stats["count"], 2),
            }
            for device, stats in devices.items()
        },
        "batchItemFailures": failures,
    }


def parse(body):
    """(device, temperature) of a reading; None for anything else."""
    try:
        message = json.loads(body)
        device, temperature = message["device"], message["temperature"]
    except (ValueError, TypeError, KeyError):
        return None
    # bool is an int to Python, and json.loads takes NaN and Infinity.
    if not isinstance(device, str) or not device or isinstance(temperature, bool):
        return None
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        return None
    return device, float(temperature)
