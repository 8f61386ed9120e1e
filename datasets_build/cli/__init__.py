"""The command line: argparse and printing only."""
