"""The Snowflake example's warehouse for .ci/package-smoke: the demo tables (orders, items, customers) in fakesnow's database DIR.

Run with the installed wheel (plus the [snowflake] extra and fakesnow): `python snowflake_example.py DIR`.
"""

from __future__ import annotations

import datetime as dt
import random
import sys

import fakesnow
import snowflake.connector

from connector.demo import insert_orders

DDL = [
    """create table orders (order_id varchar, event_name varchar, ordered_at timestamp_tz, updated_at timestamp_tz,
       email varchar, phone varchar, total number(12, 2), currency varchar, store_id integer)""",
    """create table order_items (order_id varchar, line_no integer, sku varchar, product_name varchar,
       unit_price number(10, 2), qty integer)""",
    "create table customers (customer_id varchar, email varchar, phone varchar, lifetime_value number(12, 2))",
]


class Pyformat:
    """insert_orders writes `?` placeholders; the Snowflake connector's default style is %s."""

    def __init__(self, con: snowflake.connector.SnowflakeConnection) -> None:
        self.con = con

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        self.con.cursor().executemany(sql.replace("?", "%s"), rows)


def main(db_path: str) -> None:
    with fakesnow.patch(db_path=db_path):
        con = snowflake.connector.connect(user="me", password="pw", account="acct", database="DEMO",
                                          schema="PUBLIC", session_parameters={"TIMEZONE": "UTC"})
        for statement in DDL:
            con.cursor().execute(statement)
        # 30 orders from the last 5 days: none too old, none without a match key or with currency XYZ.
        insert_orders(Pyformat(con), range(1, 31), dt.datetime.now(dt.timezone.utc), random.Random(7),
                      max_age_days=5)
        # 20 customers, the even ones over the audience's min_lifetime_value.
        con.cursor().executemany("insert into customers values (%s, %s, %s, %s)",
                                 [(f"CUS-{n:06d}", f" Customer{n}@Example.com ", f"+1 (415) 555-{n:04d}",
                                   500 if n % 2 == 0 else 100) for n in range(1, 21)])
        con.commit()
        con.close()


if __name__ == "__main__":
    main(sys.argv[1])
