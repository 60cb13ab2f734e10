{#-
    Schemas are exactly the configured names (`staging`, `marts`, ...) in every target, never
    dbt's default `<target schema>_<custom schema>`: the schemas are an interface of the design.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
