{#-
    Seeds on Spark: dbt-spark's session method puts the CSV values into its INSERT unescaped, so
    a value with a quote (the alias "r'n'b") breaks the statement. Our seeds are a few dozen
    rows: one INSERT of escaped literals, cast to the seed's column types.
-#}
{% macro spark__load_csv_rows(model, agate_table) %}
    {%- set column_override = model['config'].get('column_types', {}) -%}
    {%- set types = [] -%}
    {%- for column_name in agate_table.column_names -%}
        {%- do types.append(
            column_override.get(column_name, adapter.convert_type(agate_table, loop.index0))
        ) -%}
    {%- endfor -%}
    {%- set sql -%}
        insert into {{ this.render() }} values
        {% for row in agate_table.rows -%}
            (
            {%- for value in row -%}
                {%- if value is none -%}
                    cast(null as {{ types[loop.index0] }})
                {%- else -%}
                    cast('{{ value | string | replace("\\", "\\\\") | replace("'", "\\'") }}'
                        as {{ types[loop.index0] }})
                {%- endif -%}
                {{- ', ' if not loop.last -}}
            {%- endfor -%}
            ){{ ',' if not loop.last }}
        {% endfor %}
    {%- endset -%}
    {%- do adapter.add_query(sql, abridge_sql_log=True) -%}
    {{ return(sql) }}
{% endmacro %}
