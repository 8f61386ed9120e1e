"""Recipes: option dataclasses and the ordered steps each recipe makes from them (no argparse)."""
