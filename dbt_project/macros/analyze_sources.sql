{#-
    on-run-start: ANALYZE the raw tables that the models read. dlt does not, and autovacuum may
    not have yet right after a load; without statistics Postgres guesses that the completed-load
    filter keeps ~1% of the rows and picks nested loops that take minutes instead of a second.
    Cheap (a sample of at most 30,000 rows per table). A role that does not own raw gets a
    warning from Postgres, not an error, and the build goes on.
-#}
{% macro analyze_sources() %}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set statements = [] -%}
    {%- for source in graph.sources.values() if source.package_name == project_name -%}
        {%- set relation = adapter.get_relation(
            database=source.database, schema=source.schema, identifier=source.identifier
        ) -%}
        {%- if relation is not none -%}
            {%- do statements.append('analyze ' ~ relation) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(statements | join(';\n')) }}
{% endmacro %}
