"""``python -m edgecrack`` runs the command line."""

from edgecrack.cli import app

app()
