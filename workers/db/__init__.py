"""Storage: typed models, engine set-up and migrations, the same code on Postgres and SQLite."""
