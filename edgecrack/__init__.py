"""edgecrack: transfer learning and edge deployment for visual inspection of concrete cracks."""

__version__ = "0.1.0"

#: Manifest schema version written by this release. A manifest with a larger major
#: number was written by a newer edgecrack and is refused with a clear message.
MANIFEST_SCHEMA = 1
