"""Thumbnails of the photos put in a bucket: `app.handler`, invoked with S3 events.

Each object an event names is read, shrunk to at most 256 px on its longest side in its own
format (a JPEG stays a JPEG, a PNG a PNG), turned upright by its EXIF orientation, and written
under the same key to the bucket THUMBNAIL_BUCKET names (default photos-thumbnails). An error is
raised, not returned: fargo then retries the event and, at last, sends it to `onFailure`.
"""

import io
import os
from urllib.parse import unquote_plus

import boto3
from botocore.config import Config
from PIL import Image, ImageOps

THUMBNAIL_BUCKET = os.environ.get("THUMBNAIL_BUCKET", "photos-thumbnails")
LONGEST_SIDE = 256

# The endpoint comes from AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL), the credentials from
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Made once per instance, for every invocation.
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))


def handler(event, context):
    return {"thumbnails": [thumbnail(record["s3"]) for record in event["Records"]]}


def thumbnail(record):
    bucket = record["bucket"]["name"]
    # Keys come form-encoded, as AWS sends them: "trips/été 2026" is "trips/%C3%A9t%C3%A9+2026".
    key = unquote_plus(record["object"]["key"])
    if bucket == THUMBNAIL_BUCKET:
        # A thumbnail of a thumbnail would trigger itself again, without end.
        return {"bucket": bucket, "key": key, "skipped": "the thumbnail bucket itself"}
    photo = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with Image.open(io.BytesIO(photo)) as image:
        kind = image.format
        # Before the rotation: a JPEG is then decoded at a reduced scale, much faster.
        image.thumbnail((LONGEST_SIDE, LONGEST_SIDE))
        small = ImageOps.exif_transpose(image)
    out = io.BytesIO()
    small.save(out, kind)
    s3.put_object(
        Bucket=THUMBNAIL_BUCKET, Key=key, Body=out.getvalue(), ContentType=Image.MIME[kind]
    )
    return {"bucket": THUMBNAIL_BUCKET, "key": key, "width": small.width, "height": small.height}
