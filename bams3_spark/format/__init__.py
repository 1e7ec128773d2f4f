"""The BAMS3 on-disk format (FORMAT.md): schema, manifest, chunk codec, regions.

This package imports neither Spark nor any storage client: it is the spec in code.
"""
