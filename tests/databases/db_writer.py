"""A writer that records every transaction the server acknowledged: ``id epoch`` per line.

Run as a process of its own (``python db_writer.py postgresql|mariadb PORT ACK_FILE``) so that
the test's own work never delays it. Each transaction inserts row ``id`` and adds it to a
one-row running total in the same transaction (the total must match the rows in any consistent
copy); MariaDB's also inserts the row into a MyISAM table after the commit, the kind of table
that only a flush makes consistent on disk. The line is written (and flushed to the file, which
is on a local disk, not the database's) only once everything returned. SIGTERM ends it.
"""

from __future__ import annotations

import signal
import sys
import time

PAD = "x" * 200
SCHEMA = {
    "postgresql": [
        "CREATE TABLE acked (id bigint PRIMARY KEY, pad text NOT NULL)",
        "CREATE TABLE totals (one int PRIMARY KEY, n bigint NOT NULL, s bigint NOT NULL)",
        "INSERT INTO totals VALUES (1, 0, 0)",
    ],
    "mariadb": [
        "CREATE TABLE acked (id BIGINT PRIMARY KEY, pad TEXT NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE totals (one INT PRIMARY KEY, n BIGINT NOT NULL, s BIGINT NOT NULL)"
        " ENGINE=InnoDB",
        "INSERT INTO totals VALUES (1, 0, 0)",
        "CREATE TABLE acked_myisam (id BIGINT PRIMARY KEY, pad TEXT NOT NULL) ENGINE=MyISAM",
    ],
}


def connect(kind: str, port: int):
    if kind == "postgresql":
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    import pymysql

    return pymysql.connect(
        host="127.0.0.1", port=port, user="writer", password="writer-password", database="proof"
    )


def main() -> int:
    kind, port, ack_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    conn = connect(kind, port)
    cursor = conn.cursor()
    placeholder = "%s"
    with open(ack_path, "w") as acks:
        number = 0
        while running[0]:
            number += 1
            cursor.execute(
                f"INSERT INTO acked VALUES ({placeholder}, {placeholder})", (number, PAD)
            )
            cursor.execute(
                f"UPDATE totals SET n = n + 1, s = s + {placeholder} WHERE one = 1", (number,)
            )
            conn.commit()
            if kind == "mariadb":
                cursor.execute(
                    f"INSERT INTO acked_myisam VALUES ({placeholder}, {placeholder})", (number, PAD)
                )
            acks.write(f"{number} {time.time():.6f}\n")
            acks.flush()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
