"""The PostgreSQL backend: the only psycopg import (being built; see docs/POSTGRES.md).

So far: connecting (`connection`) and the schema with its migrations (`schema`), reachable
through `orchestrator journal migrate --db postgresql://...`. The protocol's writer,
readers, views and commands come next; until then `open_journal` refuses a URL.
"""
