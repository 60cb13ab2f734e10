{#-
    on-run-start: make the sources readable. Postgres: ANALYZE raw (analyze_sources.sql). Spark:
    declare every source table of the project over its folder of the Parquet lake, in database
    `raw` of the metastore: `<lake>/raw/<table>/` holds one folder of files per load
    (`load_id=<id>/`), read recursively (no partition column: every row carries its
    `_dlt_load_id`). A table is dropped and declared anew on each run (Spark refuses CREATE OR
    REPLACE on Parquet), so columns that appeared in the lake show up (mergeSchema). dlt writes
    its `_dlt_loads` register as one JSON document per load: read as JSON, with its columns.
    A lake with no completed load (nothing ingested yet) stops the build with one line that
    says so. The lake's URL comes from MVX_DBT_LAKE_URL (the runner sets it from Settings.lake) or the
    var `lake_url`.
-#}
{% macro prepare_sources() -%}
    {{ return(adapter.dispatch('prepare_sources', 'moovitamix')()) }}
{%- endmacro %}

{% macro default__prepare_sources() -%}
    {{ return(analyze_sources()) }}
{%- endmacro %}

{% macro spark__prepare_sources() -%}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set lake = env_var('MVX_DBT_LAKE_URL', var('lake_url', '')).rstrip('/') -%}
    {%- if not lake -%}
        {%- do exceptions.raise_compiler_error(
            'the lake URL is not set: MVX_DBT_LAKE_URL or --vars "{lake_url: ...}"'
        ) -%}
    {%- endif -%}
    {%- set json_tables = {
        '_dlt_loads': '(load_id string, schema_name string, status int, inserted_at timestamp,'
            ~ ' schema_version_hash string)'
    } -%}
    {%- set schemas = [] -%}
    {#- dlt's register first: with no completed load there is nothing to read, say so -#}
    {%- set sources = graph.sources.values()
        | selectattr('package_name', 'equalto', project_name) | list -%}
    {%- set sources = (sources | selectattr('identifier', 'in', json_tables) | list)
        + (sources | rejectattr('identifier', 'in', json_tables) | list) -%}
    {%- for source in sources -%}
        {%- if source.schema not in schemas -%}
            {%- do run_query('create database if not exists ' ~ source.schema) -%}
            {%- do schemas.append(source.schema) -%}
        {%- endif -%}
        {%- set table = source.schema ~ '.' ~ source.identifier -%}
        {%- set location = lake ~ '/' ~ source.schema ~ '/' ~ source.identifier -%}
        {%- do run_query('drop table if exists ' ~ table) -%}
        {%- if source.identifier in json_tables -%}
            {%- do run_query(
                'create table ' ~ table ~ ' ' ~ json_tables[source.identifier]
                ~ " using json location '" ~ location ~ "'"
            ) -%}
            {%- if source.identifier == '_dlt_loads' and run_query(
                'select count(*) from ' ~ table ~ ' where status = 0'
            ).columns[0].values()[0] == 0 -%}
                {%- do exceptions.raise_compiler_error(
                    'the lake at ' ~ lake ~ ' holds no completed load: run the ingestion first'
                    ~ ' (MOOVITAMIX_ENGINE=spark make ingest, or make daily)'
                ) -%}
            {%- endif -%}
        {%- else -%}
            {%- do run_query(
                'create table ' ~ table ~ ' using parquet'
                ~ " options (mergeSchema 'true', recursiveFileLookup 'true')"
                ~ " location '" ~ location ~ "'"
            ) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return('select 1') }}
{%- endmacro %}
