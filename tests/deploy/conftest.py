"""tests/deploy/image builds the Dockerfile with podman and runs the image: `make image-test` runs it
after the rest of the suite (`make test` calls it), with INGESTION_IMAGE_TEST=1; a plain `pytest`
leaves it out, so that the suite's own run does not build the image a second time (naming the folder,
`pytest tests/deploy/image`, runs it too)."""

from __future__ import annotations

import os

IMAGE_TEST_VARIABLE = "INGESTION_IMAGE_TEST"

collect_ignore = [] if os.environ.get(IMAGE_TEST_VARIABLE) == "1" else ["image"]
