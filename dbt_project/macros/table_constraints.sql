{#-
    The columns and constraints of a contracted table's CREATE TABLE, without its foreign keys:
    those are added after the rows are in, by `ensure_foreign_keys` (a post-hook of every mart).
    A foreign key declared at creation checks the rows one by one as they are inserted; added
    afterwards, Postgres checks them all with one join (README: "Foreign keys"). The keys are
    the same and still enforced for every later write.
-#}
{% macro postgres__get_table_columns_and_constraints() -%}
    {%- set raw_column_constraints = adapter.render_raw_columns_constraints(
        raw_columns=model['columns']
    ) -%}
    {%- set raw_model_constraints = adapter.render_raw_model_constraints(
        raw_constraints=model['constraints'] | rejectattr('type', 'equalto', 'foreign_key') | list
    ) -%}
    (
    {% for c in raw_column_constraints -%}
        {{ c }}{{ "," if not loop.last or raw_model_constraints }}
    {% endfor %}
    {% for c in raw_model_constraints -%}
        {{ c }}{{ "," if not loop.last }}
    {% endfor -%}
    )
{%- endmacro %}
