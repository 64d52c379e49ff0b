"""The 1EdTech Open Badges validator, run in its own venv (see requirements.txt)."""
