"""Primitives every layer above uses: colour conversion, ab bins, image decoding, metrics."""
