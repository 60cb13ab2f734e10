{#-
    The columns and constraints of a contracted table's CREATE TABLE, without its primary and
    foreign keys: those are added after the rows are in, the primary key by `add_primary_key`
    (the first post-hook of every mart, in the model's transaction) and the foreign keys by
    `ensure_foreign_keys`. A key declared at creation is checked row by row as the rows are
    inserted (an index entry, a lookup per row); added afterwards, Postgres builds the index
    with one sort and checks a foreign key with one join (README: "Keys"). The keys are the
    same and still enforced for every later write; a build whose rows break one fails and
    rolls back.
-#}
{% macro postgres__get_table_columns_and_constraints() -%}
    {%- set raw_column_constraints = adapter.render_raw_columns_constraints(
        raw_columns=model['columns']
    ) -%}
    {%- set raw_model_constraints = adapter.render_raw_model_constraints(
        raw_constraints=model['constraints']
            | rejectattr('type', 'in', ['foreign_key', 'primary_key']) | list
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

{#-
    Post-hook (in the model's transaction, before the foreign keys that may refer to it): the
    contract's primary key, added once the rows are in, if the table has none yet (an
    incremental model keeps its key between builds). Its name is Postgres' own until
    `name_primary_key` renames it after the swap. Postgres only.
-#}
{% macro add_primary_key() -%}
    {%- if not execute or target.type != 'postgres' -%}
        {{ return('') }}
    {%- endif -%}
    {%- set keys = model['constraints'] | selectattr('type', 'equalto', 'primary_key') | list -%}
    {%- if not keys -%}
        {{ return('') }}
    {%- endif -%}
    do $add_primary_key$
    begin
        if not exists (
            select 1 from pg_constraint
            where conrelid = '{{ this }}'::regclass and contype = 'p'
        ) then
            alter table {{ this }} add primary key ({{ keys[0]['columns'] | join(', ') }});
        end if;
    end
    $add_primary_key$
{%- endmacro %}
