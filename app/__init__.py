"""The Qt desktop app. Importing this package does not import Qt (the CLI stays light)."""
