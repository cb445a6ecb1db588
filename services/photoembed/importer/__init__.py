"""`photoembed import`: bring an existing library in through the HTTP API (a client of it, with no
import of the worker or the database): walk folders or an S3 prefix, skip what the service already
has by content hash, upload the rest with bounded concurrency and back-pressure, report progress.

sources.py finds the files, client.py speaks to the API, run.py does one import."""
