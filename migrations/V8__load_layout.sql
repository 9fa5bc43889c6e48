-- Which of its spec's layouts a load's file had (dataset::Layout: the
-- shapes a file has taken over the years, chosen by the header). NULL for
-- loads before this migration and for loads that failed before the header.
ALTER TABLE carga.loads ADD COLUMN layout text;
