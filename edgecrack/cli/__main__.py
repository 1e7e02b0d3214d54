"""``python -m edgecrack.cli`` runs the command line (as ``python -m edgecrack`` does)."""

from edgecrack.cli import app

app()
