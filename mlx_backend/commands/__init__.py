"""One module per ``qwen-desk`` subcommand: ``add_parser`` and ``run``."""
