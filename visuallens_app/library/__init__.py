"""The photo history: scan -> decode -> store (SQLite), thumbnails, watching."""
