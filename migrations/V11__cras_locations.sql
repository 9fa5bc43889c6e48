-- The API's cras_locations (one row per CRAS), as the dashboard's own
-- Alembic migration creates it (brunoccteixeira/ta-na-mao,
-- backend/alembic/versions/006_add_cras_locations.py, at 8dad64f). Adopted
-- when it exists, as the other API tables are (V1). carga writes it from
-- a `places` dataset (`cras`): the uuid id is derived from the source's
-- natural key (md5('carga:<dataset>:' || id_equipamento)), and `source`
-- says which rows are carga's ('carga:<dataset>'); rows of any other
-- source are never touched. Nothing is added to the API's table.
CREATE TABLE IF NOT EXISTS public.cras_locations (
    id                    uuid         NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    ibge_code             varchar(7)   NOT NULL REFERENCES public.municipalities (ibge_code),
    nome                  varchar(255) NOT NULL,
    endereco              varchar(500),
    bairro                varchar(100),
    cep                   varchar(8),
    telefone              varchar(20),
    email                 varchar(255),
    latitude              double precision,
    longitude             double precision,
    servicos              varchar[],
    horario_funcionamento varchar(100),
    source                varchar(50),
    geocode_source        varchar(50),
    created_at            timestamp    NOT NULL DEFAULT now(),
    updated_at            timestamp    NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_cras_locations_ibge_code ON public.cras_locations (ibge_code);
CREATE INDEX IF NOT EXISTS ix_cras_locations_coords ON public.cras_locations (latitude, longitude);
CREATE INDEX IF NOT EXISTS ix_cras_locations_source ON public.cras_locations (source);
