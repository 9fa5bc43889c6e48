#!/usr/bin/env python3
"""The way the data team would load a Portal file in Python today: the
standard csv module over the ZIP entry, typed rows, psycopg 3
`cursor.copy()` into a table of the same shape. No aggregates.

    python_copy.py DSN ZIP PERIOD(YYYY-MM)
"""
import csv
import datetime
import decimal
import io
import sys
import zipfile

import psycopg

dsn, path, period = sys.argv[1], sys.argv[2], sys.argv[3]
year, month = map(int, period.split("-"))
reference = datetime.date(year, month, 1)

with psycopg.connect(dsn) as conn:
    siafi = dict(conn.execute(
        "SELECT siafi_code, id FROM municipalities WHERE siafi_code IS NOT NULL").fetchall())
    program_id = conn.execute("SELECT id FROM programs WHERE code = 'BOLSA_FAMILIA'").fetchone()[0]
    conn.execute("DROP TABLE IF EXISTS bench_python")
    conn.execute("""CREATE TABLE bench_python (program_id int, reference_date date, competence_date date,
                    municipality_id int, nis bigint, value numeric(15,2))""")
    with zipfile.ZipFile(path) as archive:
        name = archive.namelist()[0]
        with archive.open(name) as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="latin-1", newline=""), delimiter=";")
            header = [h.strip() for h in next(reader)]
            col = {h: i for i, h in enumerate(header)}
            comp_i, siafi_i = col["MÊS COMPETÊNCIA"], col["CÓDIGO MUNICÍPIO SIAFI"]
            nis_i, value_i = col["NIS FAVORECIDO"], col["VALOR PARCELA"]
            with conn.cursor() as cur:
                with cur.copy("COPY bench_python FROM STDIN") as copy:
                    for row in reader:
                        comp = row[comp_i]
                        municipality = siafi.get(row[siafi_i])
                        if municipality is None:
                            continue
                        nis = row[nis_i]
                        copy.write_row((
                            program_id,
                            reference,
                            datetime.date(int(comp[:4]), int(comp[4:]), 1),
                            municipality,
                            int(nis) if len(nis) == 11 and nis.isdigit() else None,
                            decimal.Decimal(row[value_i].replace(".", "").replace(",", ".")),
                        ))
    conn.commit()
