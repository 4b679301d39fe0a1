#!/usr/bin/env python3
"""Peer implementation for benches/sanitise_records.sh, in DuckDB.

Usage: duckdb_records.py RECORDS.csv > out.csv

Does the same job as

    mishare sanitise --records RECORDS.csv --measure referrals \
        --rows payment_group --cols period --period month \
        --periods 2011-06..2016-03 --format csv

count participants whose referral_date falls in 2011-06-01..2016-03-31, by
payment_group x month (YYYY-MM), round every cell with
R(x) = 20*floor((x+10)/20), and lay the table out in full: all nine payment
groups in reference order and every month of the range in time order,
whether or not anyone falls in them (0 where nobody does). Add row/column/
grand totals as sums of the ROUNDED cells and print the CSV an LA would
receive (four '#' lines: label, method, measure and view, period; header,
rows, Total row).

(mishare also refuses a file whose payment groups are not the nine declared
ones; the generator writes only those, so the query does not check.)

All the work (CSV scan, grouping, rounding, pivot, totals, even the output
lines) is done by one DuckDB SQL query with default settings (all cores);
Python only starts DuckDB and writes the lines it returns.
"""
import sys

import duckdb

LABEL = "# Internal MI – for the recipient LA only – not for publication"
METHOD = ("# Rounded to nearest 20 (halves up); totals are sums of rounded figures; "
          "percentages are computed from rounded figures.")
ABOUT = ("# Measure: referrals; view: counts", "# Period: 2011-06 to 2016-03")
GROUPS = ["JSA 18-24", "JSA 25+", "JSA Early Access", "JSA Ex-IB", "ESA Volunteers",
          "New ESA Claimants", "ESA Ex-IB", "IB/IS", "JSA Prison Leavers"]
FIRST_DAY, LAST_DAY = "2011-06-01", "2016-03-31"

COLUMNS = ("{'participant_id': 'VARCHAR', 'la_code': 'VARCHAR', 'payment_group': 'VARCHAR', "
           "'disability': 'VARCHAR', 'referral_date': 'DATE', 'attachment_date': 'DATE', "
           "'job_start_date': 'DATE', 'job_outcome_date': 'DATE', "
           "'first_sustainment_date': 'DATE'}")

SQL = f"""
WITH
src AS (
    SELECT payment_group AS g, strftime(referral_date, '%Y-%m') AS m
    FROM read_csv($path, header = true, auto_detect = false, delim = ',',
                  quote = '"', columns = {COLUMNS})
    WHERE referral_date BETWEEN $first::DATE AND $last::DATE
),
cnt AS (
    SELECT g, m, (20 * ((count(*) + 10) // 20))::BIGINT AS r FROM src GROUP BY g, m
),
gs AS (SELECT unnest($groups) AS g, generate_subscripts($groups, 1) AS o),
ms AS (
    SELECT strftime(d, '%Y-%m') AS m
    FROM generate_series($first::DATE, $last::DATE, INTERVAL 1 MONTH) AS t(d)
),
grid AS (
    SELECT gs.g, gs.o, ms.m, coalesce(cnt.r, 0) AS r
    FROM gs CROSS JOIN ms LEFT JOIN cnt ON cnt.g = gs.g AND cnt.m = ms.m
),
body AS (
    SELECT o, g,
           CASE WHEN g LIKE '%,%' OR g LIKE '%"%' THEN '"' || replace(g, '"', '""') || '"' ELSE g END
           || ',' || string_agg(r::VARCHAR, ',' ORDER BY m) || ',' || sum(r)::BIGINT AS line
    FROM grid GROUP BY o, g
),
coltot AS (SELECT m, sum(r)::BIGINT AS r FROM grid GROUP BY m)
SELECT line FROM (
    SELECT 0 AS o, 'payment_group,' || string_agg(m, ',' ORDER BY m) || ',Total' AS line FROM ms
    UNION ALL SELECT o, line FROM body
    UNION ALL SELECT 1000000 AS o,
           'Total,' || string_agg(r::VARCHAR, ',' ORDER BY m) || ',' || sum(r)::BIGINT FROM coltot
)
ORDER BY o
"""


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: duckdb_records.py RECORDS.csv > out.csv")
    con = duckdb.connect()  # in-memory, default settings (threads = all cores)
    rows = con.execute(SQL, {"path": sys.argv[1], "groups": GROUPS,
                             "first": FIRST_DAY, "last": LAST_DAY}).fetchall()
    out = sys.stdout
    out.write("".join(line + "\n" for line in (LABEL, METHOD) + ABOUT))
    out.write("".join(line + "\n" for (line,) in rows))


if __name__ == "__main__":
    main()
