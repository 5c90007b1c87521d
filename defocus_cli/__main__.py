"""``python -m defocus_cli`` runs the command line."""

from defocus_cli.cli import console

console()
