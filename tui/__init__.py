"""The Textual dashboard (arrives with the dashboard issue); never imported by the core."""
