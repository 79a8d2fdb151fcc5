"""``python -m db``: create the database if it is missing, then create or
upgrade the schema. Running it twice changes nothing."""

import sys

import psycopg2

import settings

from .database import connect_params
from .schema import set_up


def main():
    name = connect_params()["database"]
    try:
        created = set_up()
    except psycopg2.OperationalError as error:
        print(f"cannot reach PostgreSQL at {settings.DATABASE_URL}: {error}".strip(), file=sys.stderr)
        print("Start PostgreSQL, or set DATABASE_URL to one that runs.", file=sys.stderr)
        return 1
    print(f"database {name}: {'created' if created else 'exists'}; schema up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
