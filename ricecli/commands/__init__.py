"""One module per CLI command; ricecli/cli.py registers them."""
