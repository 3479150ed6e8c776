"""The only code that writes SQL: schema and migrations, the store, report queries."""

from storage.schema import SCHEMA_VERSION, DatabaseError, migrate
from storage.store import Store

__all__ = ["SCHEMA_VERSION", "DatabaseError", "Store", "migrate"]
