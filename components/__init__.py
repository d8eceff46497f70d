"""Stage CLIs: one per DVC stage, each the same few lines over pipeline.stages (see _cli.py)."""
