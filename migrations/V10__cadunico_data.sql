-- The API's cadunico_data (municipality × month: the CadÚnico register's
-- counts), as the dashboard's own Alembic migration creates it
-- (brunoccteixeira/ta-na-mao, backend/alembic/versions/001_initial_schema.py,
-- at 8dad64f). Adopted when it exists (the API's migrations ran first), as
-- the other API tables are (V1). carga writes it from the `cadunico`
-- dataset; its total_families is the denominator of coverage_rate.
CREATE TABLE IF NOT EXISTS public.cadunico_data (
    id                       serial PRIMARY KEY,
    municipality_id          integer NOT NULL REFERENCES public.municipalities (id),
    reference_date           date    NOT NULL,
    total_families           integer,
    total_persons            integer,
    families_extreme_poverty integer,
    families_poverty         integer,
    families_low_income      integer,
    persons_0_5_years        integer,
    persons_6_14_years       integer,
    persons_15_17_years      integer,
    persons_18_64_years      integer,
    persons_65_plus          integer,
    ingested_at              timestamp,
    CONSTRAINT cadunico_data_municipality_id_reference_date_key
        UNIQUE (municipality_id, reference_date)
);
CREATE INDEX IF NOT EXISTS ix_cadunico_data_municipality_id ON public.cadunico_data (municipality_id);
CREATE INDEX IF NOT EXISTS ix_cadunico_data_reference_date ON public.cadunico_data (reference_date);
-- carga upserts on (municipality_id, reference_date): an API table made
-- without that unique constraint gets a unique index (failing here, at
-- migrate, if it already holds two rows for one municipality and month).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
        WHERE i.indrelid = 'public.cadunico_data'::regclass AND i.indisunique AND i.indnatts = 2
          AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
               WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
              = ARRAY['municipality_id', 'reference_date'])
    THEN
        CREATE UNIQUE INDEX cadunico_data_municipality_month
            ON public.cadunico_data (municipality_id, reference_date);
    END IF;
END $$;
