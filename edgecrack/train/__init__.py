"""Training side of edgecrack: the only package that imports torch at module level."""
