{#-
    on-run-start: ANALYZE the raw tables that the models read. dlt does not, and autovacuum may
    not have yet right after a load; without statistics Postgres underestimates the rows the
    completed-load filter keeps and picks nested loops (README: "Statistics and memory"). Cheap
    (a sample per table). A role that does not own raw gets a warning, and the build goes on.
-#}
{% macro analyze_sources() %}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set statements = [] -%}
    {%- for source in graph.sources.values()
        if source.package_name == project_name and source.source_name == 'moovitamix' -%}
        {%- set relation = adapter.get_relation(
            database=source.database, schema=source.schema, identifier=source.identifier
        ) -%}
        {%- if relation is not none -%}
            {%- do statements.append('analyze ' ~ relation) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(statements | join(';\n')) }}
{% endmacro %}
