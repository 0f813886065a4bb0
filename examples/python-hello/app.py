"""A Lambda-style handler for runtime python3.11: `app.handler`.

An HTTP event (payload format 2.0) gets a JSON answer naming its method, path and query; any
other event, such as a schedule's body, is returned as it came.
"""

import json


def handler(event, context):
    http = event.get("requestContext", {}).get("http") if isinstance(event, dict) else None
    if not http:
        return event
    body = {
        "message": "hello from python",
        "method": http.get("method"),
        "path": event.get("rawPath"),
        "query": event.get("queryStringParameters") or {},
        "requestId": context.aws_request_id,
    }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }
